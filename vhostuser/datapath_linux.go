package vhostuser

import (
	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
)

// ReadTX takes up to len(bufs) frames the guest sent, copying each into
// bufs[i] without its virtio-net header, storing its length in sizes[i]
// and its header in hdrs[i] (the zero header when the guest negotiated no
// offload to send; nil hdrs discards them, for a caller without
// Config.Offloads); it returns how many. The guest's buffers are all
// returned (used) before ReadTX returns, with at most one call
// notification.
//
// more says the ring may hold frames not taken and the guest was asked not
// to kick: call ReadTX again, now or after serving other ports, without
// waiting for the kick fd. With more false the ring was empty after kicks
// were re-enabled, and the guest's next frame kicks.
//
// A frame longer than its buffer goes to a buffer from Config.Large (which
// then stays in bufs[i], frame or not); when Large has none, ReadTX stops
// before that frame and says more. Without Large, or longer than its
// buffer, a frame is dropped and counted (Stats.TXOversize), never cut. A header asking for an offload
// the guest did not negotiate drops its frame (Stats.TXBadHdr), one with
// bits no driver may send too (Stats.TXHdrFlags, TXHdrGSOType); whether
// a header fits its frame is left to the caller (gso.Check). An error
// means the device is unusable: close it. It matches ErrViolation when
// the guest broke the rules, its rings' cost budget included (see
// virtq.budget): the error says what it did.
//
// After SEND_RARP (live migration), the first frame ReadTX returns once
// the ring runs is a broadcast RARP from the guest's MAC, made by the
// device (Stats.Announces): the switch learns and floods it as the
// guest's, so the network finds the guest's new port.
//
// ReadTXBatch says the same and what this call dropped.
func (s *Queues) ReadTX(bufs [][]byte, sizes []int, hdrs []gso.VirtioNetHdr) (n int, more bool, err error) {
	r, err := s.ReadTXBatch(bufs, sizes, hdrs)
	return r.N, r.More, err
}

// TXResult is what one read of the TX ring did (ReadTXBatch).
type TXResult struct {
	N     int  // frames read into bufs
	More  bool // the ring may hold more (see ReadTX)
	Drops TXDrops
	// Announce says bufs[0] is the RARP the front-end asked the device to
	// send for the guest (SEND_RARP, after a live migration), not a frame
	// of the guest's ring.
	Announce bool
}

// TXDrops counts the frames one read of the TX ring dropped, by why: the
// Stats counters of the same names, for this call alone.
type TXDrops struct {
	Oversize, Short, BadHdr, HdrFlags, HdrGSOType uint64
}

// ReadTXBatch is ReadTX returning what the call dropped with what it
// read, so a caller counts its drops from the call itself rather than
// from Stats before and after.
//
// A multi-queue guest's TX rings are read in turn, each call starting
// with the next pair, into the one batch: each ring's frames stay in
// their order, and a guest keeps a flow on one ring. Only the pairs s
// serves are read (Serve).
func (s *Queues) ReadTXBatch(bufs [][]byte, sizes []int, hdrs []gso.VirtioNetHdr) (r TXResult, err error) {
	d := s.dev
	// A disabled ring is left alone, frames and all, as DPDK's vhost does:
	// QEMU disables rings just before stopping them, and what the guest
	// queued meanwhile is taken after the resume, not lost.
	if !d.q[TXQ].running() {
		return TXResult{}, nil
	}
	defer recoverFault(&err)
	s.tx = txRules{hdrLen: virtioNetHdrLen(d.features), sendable: guestOffloads(d.features, false)}
	if d.cfg.Offloads {
		s.tx.large = s.large
	}
	if d.split > 0 {
		if len(s.rests) < len(bufs) {
			s.rests, s.isSplit = make([]txRest, len(bufs)), make([]bool, len(bufs)) // once: the batch size
		}
		s.tx.split, s.tx.splitOver, s.tx.rests, s.tx.isSplit = d.split, d.splitOver, s.rests, s.isSplit
		clear(s.isSplit[:min(len(bufs), 1)]) // the announcement's slot, if any
	}
	var st Stats // this call's
	n := 0
	// The device's own data path makes the announcement: SEND_RARP is a
	// control message, handled with every pair at home.
	announce := s == &d.Queues && d.announcePending && len(bufs) > 0 && len(bufs[0]) >= rarpLen
	if announce {
		n = d.putAnnounce(bufs, sizes, hdrs)
		st.Announces++
	}
	pairs := max(d.pairs, 1)
	first := s.nextTX % pairs
	s.nextTX = first + 1
	for k := range pairs {
		pair := (first + k) % pairs
		q := &d.q[2*pair+1]
		if s.own&(1<<pair) == 0 || !q.running() {
			continue
		}
		var more, call bool
		n, more, call, err = q.vq.readBatchFrom(&d.mem, &s.tx, bufs, sizes, hdrs, &st, n)
		r.More = r.More || more
		if err == nil && call {
			s.call(q)
		}
		if err != nil {
			break
		}
	}
	s.stats.add(&st)
	r.N, r.Announce = n, announce
	r.Drops = TXDrops{Oversize: st.TXOversize, Short: st.TXShort, BadHdr: st.TXBadHdr,
		HdrFlags: st.TXHdrFlags, HdrGSOType: st.TXHdrGSOType}
	return r, err
}

// running says the ring moves frames: started, enabled and mapped.
func (q *queue) running() bool { return q.started && q.enabled && q.vq.avail != nil }

// putAnnounce puts the RARP that SEND_RARP asked for in bufs[0], first of
// the frames ReadTX returns.
func (d *Device) putAnnounce(bufs [][]byte, sizes []int, hdrs []gso.VirtioNetHdr) int {
	sizes[0] = putRARP(bufs[0], d.announce)
	if hdrs != nil {
		hdrs[0] = gso.VirtioNetHdr{}
	}
	d.announcePending = false
	return 1
}

// WriteRX writes frames into the guest's RX buffers, each behind its
// header hdrs[i] (all zero when hdrs is nil; num_buffers is the device's
// to fill), and returns how many of them it took: written, or dropped
// because the guest's buffers cannot hold them (Stats.RXOversize). Fewer
// than len(frames) means the guest is out of buffers (or its RX ring is
// not running): keep the rest and try again when KickFD(RXQ) fires. At
// most one call notification per batch.
//
// The header is not checked against what the guest negotiated: pass
// only headers Offloads Takes.
//
// WriteRXBatch says the same and how many of them it dropped.
func (s *Queues) WriteRX(frames [][]byte, hdrs []gso.VirtioNetHdr) (n int, err error) {
	r, err := s.WriteRXBatch(frames, hdrs)
	return r.N, err
}

// RXResult is what one write to the RX ring did (WriteRXBatch).
type RXResult struct {
	N        int    // frames taken from the head of frames: written or dropped
	Oversize uint64 // of them, dropped: larger than the guest's buffers can hold
	// Stray counts the frames taken and dropped because their flow goes to
	// the RX ring of a pair another Queues serves (RXPair): a caller that
	// spreads the pairs gives each Queues only its own pairs' frames.
	Stray uint64
}

// WriteRXBatch is WriteRX returning how many of the frames it took it
// dropped, so a caller counts them from the call itself rather than from
// Stats before and after.
//
// A multi-queue guest's frames go to the RX ring its flow hashes to
// (flowHash, over the enabled RX rings), so one flow's frames arrive on
// one ring, in order. Frames are written in their order, a run of
// frames for the same ring at a time; a ring out of buffers stops the
// call there, as a single ring's would.
func (s *Queues) WriteRXBatch(frames [][]byte, hdrs []gso.VirtioNetHdr) (r RXResult, err error) {
	d := s.dev
	rings, nr := d.runningRX()
	if nr == 0 || len(frames) == 0 {
		return RXResult{}, nil
	}
	defer recoverFault(&err)
	if s.rxOpen != 0 {
		s.FlushRX() // the frames WriteRXFrom wrote go first
	}
	f := d.features
	hdrLen, mrg := virtioNetHdrLen(f), f&(1<<featNetMrgRxbuf) != 0
	var st Stats // this call's
	var calls uint16
	var stray uint64
	n := 0
	if nr == 1 && s.own&(1<<(rings[0]/2)) != 0 {
		q := &d.q[rings[0]]
		var call bool
		n, call, err = q.vq.writeBatch(&d.mem, hdrLen, mrg, frames, hdrs, &st)
		if call {
			calls |= 1 << rings[0]
		}
	} else {
		// Each ring's used entries are published once, after all the
		// runs: a flow's frames are on one ring, so nothing orders the
		// rings among themselves.
		var runs [MaxQueuePairs]rxBatch // by pair
		ring := rings[flowHash(frames[0])%uint32(nr)]
		for n < len(frames) {
			// The run of frames from n on that go to the same ring.
			end, next := n+1, ring
			for ; end < len(frames); end++ {
				if next = rings[flowHash(frames[end])%uint32(nr)]; next != ring {
					break
				}
			}
			if s.own&(1<<(ring/2)) == 0 {
				stray += uint64(end - n) // not ours to write: dropped
				n, ring = end, next
				continue
			}
			var h []gso.VirtioNetHdr
			if hdrs != nil {
				h = hdrs[n:end]
			}
			k, werr := d.q[ring].vq.writeRun(&runs[ring/2], &d.mem, hdrLen, mrg, frames[n:end], h, &st)
			n += k
			if err = werr; err != nil || n < end {
				break // out of buffers: the frames after wait, in order
			}
			ring = next
		}
		for i := range nr {
			if err == nil && d.q[rings[i]].vq.endRun(&runs[rings[i]/2]) {
				calls |= 1 << rings[i]
			}
		}
	}
	s.stats.add(&st)
	if err == nil {
		for i := range 2 * max(d.pairs, 1) {
			if calls&(1<<i) != 0 {
				s.call(&d.q[i])
			}
		}
	}
	return RXResult{N: n, Oversize: st.RXOversize, Stray: stray}, err
}

// runningRX lists the RX rings that run, rings[:nr]: those a frame's flow
// may hash to.
func (d *Device) runningRX() (rings [MaxQueuePairs]uint8, nr int) {
	for i := range max(d.pairs, 1) {
		if d.q[2*i].running() {
			rings[nr] = uint8(2 * i)
			nr++
		}
	}
	return rings, nr
}

// DrainKick reads queue q's kick eventfd after the poller reported it
// readable, so that it stops being readable until the next kick. An
// error means the kick fd cannot do that (end of file, or a read error
// other than EAGAIN: it would be reported readable again at once, and the
// loop would spin): the device is unusable, close it.
func (s *Queues) DrainKick(q int) error {
	fd := s.dev.q[q].kick
	if fd < 0 {
		return nil
	}
	for {
		n, err := unix.Read(fd, s.drain[:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return nil // readable no more: someone read it first
		case err != nil:
			return violation("queue %d: reading the kick fd: %v", q, err)
		case n == 0:
			return violation("queue %d: the kick fd reads end of file", q)
		}
		s.stats.Kicks++
		return nil
	}
}

// call tells the guest about new used entries. A full or odd fd is the
// front-end's problem, never a reason to block or stop.
func (s *Queues) call(q *queue) {
	if q.call < 0 {
		return
	}
	for {
		_, err := unix.Write(q.call, s.dev.one[:])
		if err == unix.EINTR {
			continue
		}
		s.stats.Calls++
		return
	}
}

// recoverFault turns a fault on guest memory into an error. A front-end
// can shrink a memory file after we mapped it; touching the lost pages
// raises SIGBUS, which the runtime turns into a panic only on goroutines
// that called debug.SetPanicOnFault(true): the engine's loop must.
func recoverFault(err *error) {
	r := recover()
	if r == nil {
		return
	}
	if f, ok := r.(interface{ Addr() uintptr }); ok {
		*err = violation("fault on guest memory at %#x: the front-end shrank a memory file", f.Addr())
		return
	}
	panic(r)
}
