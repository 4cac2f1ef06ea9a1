package vhostuser

import "encoding/binary"

// Queue numbers of a virtio-net device's first queue pair. Pair k's are
// 2k (RX) and 2k+1 (TX).
const (
	RXQ = 0 // switch -> guest: the guest posts empty buffers, we fill them
	TXQ = 1 // guest -> switch: the guest posts frames, we take them
)

// numQueues is the queues of one pair.
const numQueues = 2

// MaxQueuePairs is how many RX/TX pairs a multi-queue guest may use
// (VIRTIO_NET_F_MQ, answered to GET_QUEUE_NUM): queues 0 to
// 2*MaxQueuePairs-1, each with its own kick fd (KickFD).
const MaxQueuePairs = 8

// MaxQueues is the most queues a device has: every pair's RX and TX.
const MaxQueues = 2 * MaxQueuePairs

// MaxDeviceFds is the most file descriptors one guest can make a Device
// hold at once, whatever it negotiates: its socket, a kick and a call
// eventfd for every queue, one fd per distinct file of its memory table
// (kept for Export), and the fds of a message it has begun and not
// finished sending (read with its first bytes, held until its last). A
// daemon's fd budget counts this much per guest.
const MaxDeviceFds = 1 + 2*MaxQueues + maxRegions + maxMessageFDs

// maxQueueSize is the largest split virtqueue (virtio 1.x: 32768).
const maxQueueSize = 32768

// maxEmptyDescs is how many zero-length descriptors one chain may hold.
// Every descriptor walked costs the same whatever its length, and one that
// carries nothing buys the guest that cost for free: without a cap, one
// chain of 32768 of them made every frame cost 32768 steps. Zero-length
// descriptors are legal but never come from an honest driver in numbers:
// Linux puts none in a chain (skb_to_sgvec skips empty pieces, its receive
// buffers are never empty), DPDK one per empty mbuf segment, which
// applications hardly ever make. With the cap, a chain costs at most the
// bytes it carries plus this many steps.
const maxEmptyDescs = 16

// Descriptor flags. Anything else (INDIRECT included: not negotiated) is a
// violation.
const (
	descFNext  = 1
	descFWrite = 2
	descFKnown = descFNext | descFWrite
)

// Ring flags.
const (
	availFNoInterrupt = 1 // guest: do not call me (ignored with EVENT_IDX)
	usedFNoNotify     = 1 // us: do not kick me (ignored with EVENT_IDX)
)

// Byte sizes of the three parts of a split ring of num entries, with the
// EVENT_IDX trailer (we always require room for it: two bytes).
func descTableSize(num int) uint64 { return 16 * uint64(num) }
func availRingSize(num int) uint64 { return 6 + 2*uint64(num) }
func usedRingSize(num int) uint64  { return 6 + 8*uint64(num) }

// virtq is one split virtqueue over guest memory: the descriptor table, the
// avail ring the guest produces into and the used ring we produce into.
// Nothing here holds a pointer into guest memory across a change of the
// memory table: the views are re-derived by setRings.
type virtq struct {
	index int // the queue's number (even RX, odd TX), for error messages
	num   int // entries, a power of 2
	mask  uint16

	desc, avail, used []byte

	lastAvail uint16 // next avail entry we will take
	usedIdx   uint16 // next used entry we will fill; published up to here
	usedFlags uint16 // our shadow of used->flags

	// polled: the caller polls this ring (Device.SetBusyPoll), so once
	// kicks are stopped they stay stopped while it runs dry: the guest
	// posts without a system call, and we see it by looking; with
	// EVENT_IDX it kicks only once it has posted half a ring more than
	// we took (kickWhenHalfFull).
	polled bool

	eventIdx     bool   // EVENT_IDX negotiated
	kicksAllowed bool   // the guest may kick (flag clear / avail_event current)
	kickAt       uint16 // with EVENT_IDX: the avail_event we stored last

	// budget is how many more descriptors may be walked before we next
	// publish used entries: by the TX batch under way, or by the RX
	// frames taken since the last publish and the one under way. Chains
	// the guest has posted and we have not returned are disjoint, so an
	// honest guest never makes us walk more than the queue size in that
	// time: more means chains in flight share descriptors (every avail
	// entry naming one long chain), and the guest is closed. This bounds
	// one TX call's cost by the queue size, not its square.
	budget int
	// walked counts every descriptor read, for the tests that hold a
	// call's cost to the queue size whatever the guest wrote.
	walked uint64
	// availLoads counts loads of the guest's avail idx, for the tests
	// that hold a batch to one.
	availLoads uint64
	// prefetches counts prefetchChains calls, for the test that holds
	// frames written straight to one a batch.
	prefetches uint64

	// held is how many TX chains a split read (txRules.split) took and
	// has not returned: their used entries are written, from usedIdx on,
	// and published by releaseHeld once the frames' rests are copied.
	held int

	// rest and restLen, while WriteRXFrom writes a frame straight from
	// another guest, are its bytes after the head given as the frame
	// (direct.go): a field, not an argument, so that the path every
	// other frame takes passes what it did before, in registers.
	rest    *txRest
	restLen int

	// short is what an RX walk learned of the chains at lastAvail when a
	// frame did not fit, so no frame is tried against them again until
	// the guest posts more: without it every frame flooded to a guest
	// walked the same chains and was dropped.
	short shortChains

	// log, when not nil, is the dirty log every write into guest memory
	// is marked in (dirtylog.go); nil while no migration runs, which is
	// the one branch logging costs the write path. logUsedRing says the
	// used ring is logged too, at guest address usedLogAddr.
	log         *dirtyLog
	logUsedRing bool
	usedLogAddr uint64
}

// shortChains says the chains at avail entries at..at+chains-1 were walked
// whole and offer room bytes in all, walking descs descriptors.
type shortChains struct {
	valid  bool
	at     uint16 // lastAvail when they were walked; nothing was taken since
	chains int
	room   uint64
	descs  int
}

// reset prepares q for a ring of num entries whose next avail entry is
// base; we hold no descriptor, so everything before base is used.
func (q *virtq) reset(num int, base uint16, eventIdx bool) {
	q.num = num
	q.mask = uint16(num - 1)
	q.lastAvail = base
	q.usedIdx = base
	q.usedFlags = 0
	q.eventIdx = eventIdx
	q.kicksAllowed = true
	q.short = shortChains{}
}

// setRings checks and installs the three ring views. Each must be exactly
// the size the queue needs and aligned for the atomic word accesses.
func (q *virtq) setRings(desc, avail, used []byte) error {
	switch {
	case uint64(len(desc)) != descTableSize(q.num):
		return violation("queue %d: descriptor table of %d bytes, want %d", q.index, len(desc), descTableSize(q.num))
	case uint64(len(avail)) != availRingSize(q.num):
		return violation("queue %d: avail ring of %d bytes, want %d", q.index, len(avail), availRingSize(q.num))
	case uint64(len(used)) != usedRingSize(q.num):
		return violation("queue %d: used ring of %d bytes, want %d", q.index, len(used), usedRingSize(q.num))
	case !alignedTo(avail, 4):
		// The spec asks for 2; we load idx with its flags as one aligned
		// word. Linux, QEMU and DPDK lay the avail ring right after the
		// 16-byte aligned descriptor table.
		return violation("queue %d: avail ring not 4-byte aligned", q.index)
	case !alignedTo(used, 4):
		return violation("queue %d: used ring not 4-byte aligned", q.index)
	}
	q.desc, q.avail, q.used = desc, avail, used
	q.short = shortChains{} // learned from the old views
	return nil
}

// The memory ordering the virtio split ring needs (virtio 1.x, 2.7.13),
// and where each piece of it is paid, at most once per batch:
//
//   - acquire on the avail idx (availIdx, load32): avail entries and the
//     descriptors and buffers they name are read after it. A plain MOV on
//     amd64, LDAR on arm64; loaded once per batch (more only when the
//     entries seen run out), never per frame.
//   - release on the used idx (publish, store32): the used entries and
//     the RX bytes are written before it. Once per batch on TX and RX,
//     however many frames the batch moved.
//   - a full fence between our used idx store and the load of the
//     guest's used_event or NO_INTERRUPT flag (needCall): without it the
//     guest could miss our entries and we its request for a call, and
//     neither side would move. Once per batch that published anything.
//   - a full fence between storing avail_event (or clearing NO_NOTIFY)
//     and re-loading the avail idx (allowKicks): the mirror of the
//     guest's own fence before it reads avail_event. Only when a ring
//     goes idle, never while frames flow (stopKicks writes nothing with
//     EVENT_IDX: avail_event stays behind and the guest does not kick).
//
// Nothing else is ordered: descriptors, avail entries and buffers are
// plain loads and copies, each read once into locals and checked.

// availIdx loads the guest's avail idx with acquire semantics: ring
// entries below it are read only after it.
func (q *virtq) availIdx() uint16 {
	q.availLoads++
	return uint16(load32(q.avail, 0) >> 16)
}

func (q *virtq) availFlags() uint16 { return uint16(load32(q.avail, 0)) }

// pending is how many avail entries we have not taken. More than the
// queue size means the guest's index is garbage.
func (q *virtq) pending() (int, error) {
	n := int(q.availIdx() - q.lastAvail)
	if n > q.num {
		return 0, violation("queue %d: avail idx %d is %d entries past our %d, queue size %d",
			q.index, q.lastAvail+uint16(n), n, q.lastAvail, q.num)
	}
	return n, nil
}

// head reads the descriptor index the guest put in avail entry lastAvail+k.
func (q *virtq) head(k int) (uint16, error) {
	slot := (q.lastAvail + uint16(k)) & q.mask
	h := load16(q.avail, 4+2*int(slot))
	if int(h) >= q.num {
		return 0, violation("queue %d: avail entry %d names descriptor %d, queue size %d",
			q.index, q.lastAvail+uint16(k), h, q.num)
	}
	return h, nil
}

// descriptor is one entry of the table, read once: the guest may change
// the table while we walk it, and every check applies to these copies.
type descriptor struct {
	addr  uint64
	len   uint32
	flags uint16
	next  uint16
}

func (q *virtq) readDesc(i uint16) descriptor {
	b := q.desc[16*int(i) : 16*int(i)+16]
	return descriptor{
		addr:  binary.LittleEndian.Uint64(b[0:]),
		len:   binary.LittleEndian.Uint32(b[8:]),
		flags: binary.LittleEndian.Uint16(b[12:]),
		next:  binary.LittleEndian.Uint16(b[14:]),
	}
}

// putUsed fills used entry usedIdx+k; it is published by publish.
func (q *virtq) putUsed(k int, id uint16, n uint32) {
	off := 4 + 8*int((q.usedIdx+uint16(k))&q.mask)
	// One 8-byte store: through encoding/binary the compiler split the
	// entry into a 16-bit store and byte stores of the zeros (id is 16
	// bits, n often constant 0), each waiting for the line the guest
	// reads.
	store64le(q.used, off, uint64(id)|uint64(n)<<32)
}

// publish makes k more used entries visible: the entries were written
// before, and the store of the idx word is a release.
func (q *virtq) publish(k int) {
	if q.log != nil {
		q.logPublish(k)
	}
	q.usedIdx += uint16(k)
	store32(q.used, 0, uint32(q.usedFlags)|uint32(q.usedIdx)<<16)
}

// needCall says whether the guest asked to be told of used entries
// published since old (the used idx when this batch began).
func (q *virtq) needCall(old uint16) bool {
	if q.usedIdx == old {
		return false
	}
	fence() // our used idx store before the guest's event/flags load
	if q.eventIdx {
		ev := load16(q.avail, 4+2*q.num) // used_event
		return q.usedIdx-ev-1 < q.usedIdx-old
	}
	return q.availFlags()&availFNoInterrupt == 0
}

// allowKicks asks the guest to kick us when it publishes avail entry at
// (with EVENT_IDX: avail_event; without, any entry). at must be an avail
// idx we have seen, not one behind it: the guest kicks only when its idx
// crosses avail_event, and it never crosses an entry it published
// already. The caller must then re-check the avail idx: an entry added
// before the guest saw this would otherwise wait for a kick that never
// comes. The fence orders our store before that load, as the guest's
// orders its avail idx store before its avail_event load.
func (q *virtq) allowKicks(at uint16) {
	if q.eventIdx {
		q.setAvailEvent(at)
	} else {
		q.usedFlags &^= usedFNoNotify
		store32(q.used, 0, uint32(q.usedFlags)|uint32(q.usedIdx)<<16)
		if q.log != nil {
			q.logUsed(0, 4)
		}
	}
	q.kicksAllowed = true
	fence()
}

// resumeFromUsed sets q, its rings mapped, to go on from the used idx in
// guest memory: what a device whose indices were lost with its process
// (a crash) knows for sure. Entries below it were used, and the split ring
// is used in order here (TX and RX alike), so the avail entries from it
// on are the ones not used yet: the next to take. An entry the lost
// process took and never published is taken again: a TX frame it had
// forwarded goes out twice, an RX buffer it had filled is filled anew.
//
// The used idx is in memory the guest can write. One more than the queue
// size behind the avail idx, or ahead of it, is no state an honest guest
// and device leave: refused, so nothing walks a ring from a made-up
// place. Within that window a guest that rewrote it only has its own
// descriptors taken again, each checked as ever.
func (q *virtq) resumeFromUsed() error {
	used := uint16(load32(q.used, 0) >> 16)
	avail := q.availIdx()
	if n := int(avail - used); n > q.num {
		return violation("queue %d: used idx %d is %d entries behind avail idx %d, queue size %d: the ring cannot be resumed",
			q.index, used, n, avail, q.num)
	}
	q.lastAvail, q.usedIdx, q.usedFlags = used, used, 0
	q.short = shortChains{}
	// Kicks on, whatever the lost process had said: the caller reads the
	// ring once without one.
	q.allowKicks(avail)
	return nil
}

// kickWhenHalfFull asks the guest of a polled ring, seen empty at
// lastAvail, to kick once it posts the entry half a ring on (EVENT_IDX;
// without it, kicks stay off). The caller looks at the ring on a timer
// (the engine's Config.Coalesce) or without pause; the kick is for a
// guest that fills its ring faster than that, which would otherwise wait
// with a full ring. No fence: nothing waits for this kick, so a guest
// that has passed the entry already only goes on until the next look.
// Stored only when it changes, as the guest reads the line at every post.
func (q *virtq) kickWhenHalfFull() {
	if at := q.lastAvail + uint16(q.num/2); q.eventIdx && q.kickAt != at {
		q.setAvailEvent(at)
	}
}

// setAvailEvent stores at as avail_event (EVENT_IDX): the guest kicks
// when its avail idx crosses it.
func (q *virtq) setAvailEvent(at uint16) {
	store16(q.used, 4+8*q.num, at)
	q.kickAt = at
	if q.log != nil {
		q.logUsed(4+8*q.num, 2)
	}
}

// stopKicks tells the guest we are busy with the ring and will look at it
// again without being kicked. With EVENT_IDX there is nothing to write:
// avail_event stays behind, and the guest kicks only when crossing it.
func (q *virtq) stopKicks() {
	if !q.eventIdx {
		q.usedFlags |= usedFNoNotify
		store32(q.used, 0, uint32(q.usedFlags)|uint32(q.usedIdx)<<16)
		if q.log != nil {
			q.logUsed(0, 4)
		}
	}
	q.kicksAllowed = false
}

// maxPrefetch bounds how many chains one prefetch looks at: a batch.
const maxPrefetch = 64

// lineSpan is the cache lines from the one holding byte first to the one
// holding byte last, first <= last: what one prefetch asks for.
type lineSpan struct{ first, last uintptr }

// prefetchChains asks the CPU to start loading, all at once, the buffers
// of the k chains at avail entries lastAvail on: for chain i, every cache
// line of as much of its first descriptor as frame i and extra bytes
// take (frames nil: extra bytes), for writing (an RX ring's) or for
// reading (a TX ring's). The guest's core wrote these lines last, or they
// left our core's caches since, so each costs a trip; taken one frame at
// a time, each frame waited for its own, one line after another.
// Prefetched, a batch's trips overlap.
func (q *virtq) prefetchChains(m *memory, k int, frames [][]byte, extra int, write bool) {
	var spans [maxPrefetch]lineSpan
	n := q.chainSpans(m, k, frames, extra, &spans)
	q.prefetches++
	if write {
		prefetchWrite(spans[:n])
	} else {
		prefetchRead(spans[:n])
	}
}

// maxPrefetchLen bounds the bytes of one chain prefetched: a page, past
// which the CPU's own prefetcher would not follow a copy either.
const maxPrefetchLen = 4096

// chainSpans is prefetchChains' list of lines, in spans, of which it
// returns how many it filled.
//
// Nothing is trusted here: a prefetch never faults and changes nothing,
// so entries and descriptors are read without checks beyond the bounds
// of the rings, a buffer outside the region that answered last is left
// out, and the walk that follows checks everything as ever. The spans
// stay inside that region all the same: a hint is no licence to pull in
// lines of anything else.
func (q *virtq) chainSpans(m *memory, k int, frames [][]byte, extra int, spans *[maxPrefetch]lineSpan) int {
	k = min(k, maxPrefetch)
	if frames != nil {
		k = min(k, len(frames))
	}
	r := &m.r[m.last]
	base := addrOf(r.mem)
	n := 0
	for i := range k {
		h := load16(q.avail, 4+2*int((q.lastAvail+uint16(i))&q.mask))
		if int(h) >= q.num {
			break
		}
		d := q.desc[16*int(h) : 16*int(h)+16]
		off := binary.LittleEndian.Uint64(d) - r.guest
		want := extra
		if frames != nil {
			want += len(frames[i])
		}
		l := min(uint64(binary.LittleEndian.Uint32(d[8:])), uint64(want), maxPrefetchLen)
		if off >= r.size || l == 0 {
			continue
		}
		l = min(l, r.size-off)
		spans[n] = lineSpan{base + uintptr(off), base + uintptr(off+l-1)}
		n++
	}
	return n
}

// prefetchUsed asks the CPU to take for writing the used ring's lines
// that k entries from usedIdx+from on and the idx word will be written
// in: the guest reads them after each publish, so they are its lines
// too, and the last store of a batch waited for each in turn.
func (q *virtq) prefetchUsed(from, k int) {
	if k <= 0 {
		return
	}
	k = min(k, maxPrefetch, q.num)
	base := addrOf(q.used)
	entry := func(i int) uintptr { return base + uintptr(4+8*i) }
	first := int((q.usedIdx + uint16(from)) & q.mask)
	last := int((q.usedIdx + uint16(from+k-1)) & q.mask)
	spans := [3]lineSpan{{base, base}}
	n := 1
	if first <= last {
		spans[n] = lineSpan{entry(first), entry(last) + 7}
		n++
	} else { // the entries wrap past the ring's end
		spans[n] = lineSpan{entry(first), entry(q.num-1) + 7}
		spans[n+1] = lineSpan{entry(0), entry(last) + 7}
		n += 2
	}
	prefetchWrite(spans[:n])
}
