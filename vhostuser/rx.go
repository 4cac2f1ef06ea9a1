package vhostuser

import "github.com/vknetd/vknetd/gso"

// frameFit says how a frame went into an RX ring.
type frameFit uint8

const (
	fitDone   frameFit = iota // written; its chains are in the used ring
	fitNoBufs                 // the guest has not posted enough buffers: wait for its kick
	fitNoRoom                 // the used entries of this call fill the ring: publish, then retry
	fitTooBig                 // the guest's buffers can never hold it: drop
)

// writeBatch writes frames into an RX ring, each after a virtio-net
// header (hdrs[i], or all zero when hdrs is nil), and returns how many frames it took: written, or dropped
// (counted) because the guest's buffers cannot hold them. Fewer than
// len(frames) means the guest is out of buffers; kicks were allowed at
// the avail idx last seen and the ring re-checked, so the guest's next
// post will kick. call says the guest wants to be told about the used
// entries.
//
// With MRG_RXBUF the guest may have posted buffers, too few for the next
// frame: then avail_event must be the guest's avail idx, not lastAvail
// (the first of those buffers), which the guest has crossed already and
// would never kick for again.
//
// With mrg (MRG_RXBUF) a frame fills as many chains as it needs and its
// header's num_buffers says how many; without, it needs one chain big
// enough for all of it.
func (q *virtq) writeBatch(m *memory, hdrLen int, mrg bool, frames [][]byte, hdrs []gso.VirtioNetHdr, st *Stats) (n int, call bool, err error) {
	var b rxBatch
	if n, err = q.writeRun(&b, m, hdrLen, mrg, frames, hdrs, st); err != nil {
		return n, false, err
	}
	return n, q.endRun(&b), nil
}

// rxBatch is what one call has written into an RX ring and not published
// yet, across the runs of frames it gives the ring (writeRun): a
// multi-queue guest's frames come in runs for one ring, then another, and
// each ring publishes its used entries once, at the end (endRun).
type rxBatch struct {
	open  bool
	old   uint16 // the used idx when the call began
	taken int    // used entries written and not published
	// seen is how many avail entries past lastAvail the guest had posted
	// when we last loaded its avail idx. The idx shares a cache line
	// with the entries the guest is writing: loaded once per batch, not
	// once per frame, and again only when the chains seen run out.
	seen int
	// ahead is how many chains from lastAvail on the last prefetch for
	// frames written straight (writeRunFrom) covered and no frame has
	// taken yet: such frames come one call each, and their chains are
	// prefetched directAhead at a time, not one a call.
	ahead int
}

// endRun publishes what b wrote and says whether the guest wants a call.
func (q *virtq) endRun(b *rxBatch) bool {
	if !b.open {
		return false
	}
	if b.taken > 0 {
		q.publish(b.taken)
		b.taken = 0
	}
	return q.needCall(b.old)
}

// writeRunFrom is writeRun for one frame written straight from another
// guest (direct.go): frames[0] is its head, rest the rest of it in the
// sender's memory.
func (q *virtq) writeRunFrom(b *rxBatch, m *memory, hdrLen int, mrg bool, frames [][]byte, rest *txRest, st *Stats) (n int, err error) {
	q.rest, q.restLen = rest, rest.len()
	n, err = q.writeRun(b, m, hdrLen, mrg, frames, nil, st)
	q.rest, q.restLen = nil, 0
	return n, err
}

// directAhead is how many chains one prefetch for frames written
// straight covers: an engine's read batch.
const directAhead = 32

// writeRun is writeBatch's work without the publishing: frames go into
// the ring after what b holds already, and stay unpublished until endRun.
func (q *virtq) writeRun(b *rxBatch, m *memory, hdrLen int, mrg bool, frames [][]byte, hdrs []gso.VirtioNetHdr, st *Stats) (n int, err error) {
	if !b.open {
		// The chains of the frames taken until we publish are in flight
		// at once, and so are those of the frame under way: distinct
		// descriptors, num at most (see virtq.budget).
		*b = rxBatch{open: true, old: q.usedIdx}
		q.budget = q.num
	}
	// The chains the guest posted are counted here, not by the first
	// frame's writeFrame, so that the buffers of the whole run are
	// prefetched before the first is written (prefetchChains).
	if b.seen <= 0 && !(q.short.valid && q.short.at == q.lastAvail) {
		var err error
		if b.seen, err = q.pending(); err != nil {
			return 0, err
		}
	}
	switch {
	case b.seen <= 0:
	case q.rest == nil:
		q.prefetchChains(m, b.seen, frames, hdrLen+q.restLen, true)
		q.prefetchUsed(b.taken, min(b.seen, len(frames)))
	case b.ahead == 0:
		// A frame written straight comes alone, a call each: the chains
		// of the batch's next directAhead frames are prefetched at once,
		// each taken to be this frame's size, as they mostly are. Once
		// per frame, each prefetch came too late to overlap anything.
		b.ahead = min(b.seen, directAhead)
		q.prefetchChains(m, b.ahead, nil, hdrLen+len(frames[0])+q.restLen, true)
		q.prefetchUsed(b.taken, b.ahead)
	}
	rechecks := 0 // kick requests since the last frame went in
	for n < len(frames) {
		var hdr gso.VirtioNetHdr
		if hdrs != nil {
			hdr = hdrs[n]
		}
		k, fit, err := q.writeFrame(m, hdrLen, mrg, frames[n], &hdr, b.taken, &b.seen)
		if err != nil {
			return n, err
		}
		switch fit {
		case fitDone:
			b.taken += k
			b.seen -= k
			b.ahead = max(b.ahead-k, 0)
			q.lastAvail += uint16(k)
			q.short.valid = false
			st.RXFrames++
			st.PairRXFrames[q.index/2]++
			st.RXBytes += uint64(len(frames[n]) + q.restLen)
			n++
			rechecks = 0
			if q.kicksAllowed {
				q.stopKicks()
			}
			continue
		case fitTooBig:
			st.RXOversize++
			n++
			continue
		case fitNoRoom:
			q.publish(b.taken)
			b.taken = 0
			q.budget = q.num
			continue
		}
		// fitNoBufs: ask for a kick on the guest's next post, then look once
		// more, so buffers posted before the guest saw the request are not
		// left waiting. Done when that look found nothing new since the
		// request. Without EVENT_IDX the cleared flag asks for every post.
		// An honest guest posts at most num entries we have not taken, so
		// the idx moves at most num times; a guest rewriting it to keep us
		// here only loses its own kick.
		at := q.availIdx()
		if q.kicksAllowed && (!q.eventIdx || q.kickAt == at) || rechecks > q.num {
			break
		}
		q.allowKicks(at)
		rechecks++
	}
	return n, nil
}

// writeFrame writes one frame behind its header h into the chains at
// avail entries lastAvail, lastAvail+1..., filling used entries from taken
// on, and returns how many chains it used. Nothing is committed: the
// caller advances lastAvail (and takes what it used off *seen). h's
// NumBuffers is ours to set, not the caller's.
//
// *seen is how many entries past lastAvail the avail idx last loaded
// offered; the idx is loaded again only when the frame needs more chains
// than that, or when q.short is to judge it (which must see the guest's
// idx now, to catch one that went back).
//
// A frame that does not fit leaves what its walk learned in q.short, and
// the next frame is judged by that without walking those chains again:
// only chains the guest posted since are walked, once. So a guest whose
// buffers can hold nothing costs one walk, not one per frame, and a frame
// costs steps in proportion to its bytes (each chain walked whole holds at
// least a header, see fillChain), never the queue size per frame.
func (q *virtq) writeFrame(m *memory, hdrLen int, mrg bool, frame []byte, h *gso.VirtioNetHdr, taken int, seen *int) (int, frameFit, error) {
	need := hdrLen + len(frame) + q.restLen
	shortKnown := q.short.valid && q.short.at == q.lastAvail
	if *seen <= 0 || shortKnown {
		var err error
		if *seen, err = q.pending(); err != nil {
			return 0, 0, err
		}
	}
	avail := *seen
	if shortKnown {
		fit, known, err := q.shortFit(m, hdrLen, mrg, need, avail, taken)
		if known || err != nil {
			return 0, fit, err
		}
	}
	hdr := [gso.HdrSizeMrgRxbuf]byte{10: 1} // a plain frame's: num_buffers 1 unless patched below
	if h.Flags|uint8(h.GSOType) != 0 || h.HdrLen|h.GSOSize|h.CsumStart|h.CsumOffset != 0 {
		h.NumBuffers = 1
		h.Encode(hdr[:], gso.HdrSizeMrgRxbuf)
	}
	if q.rest == nil && avail > 0 && taken < q.num {
		head, err := q.head(0)
		if err != nil {
			return 0, 0, err
		}
		if q.fillOneDesc(m, head, &hdr, hdrLen, frame) {
			q.putUsed(taken, head, uint32(need))
			return 1, fitDone, nil
		}
	}
	var nb [2][]byte // where num_buffers' two bytes went
	pos, chains := 0, 0
	budget := q.budget
	fit := fitDone
	for pos < need {
		if chains == avail {
			// Out of the chains seen: the guest may have posted more since.
			fresh, err := q.pending()
			if err != nil {
				return 0, 0, err
			}
			if *seen, avail = fresh, fresh; chains < avail {
				continue
			}
			fit = fitNoBufs
			if chains == q.num {
				fit = fitTooBig
			}
			break
		}
		if taken+chains == q.num {
			fit = fitNoRoom
			if taken == 0 {
				fit = fitTooBig
			}
			break
		}
		head, err := q.head(chains)
		if err != nil {
			return 0, 0, err
		}
		wrote, err := q.fillChain(m, head, hdr[:hdrLen], frame, pos, &nb)
		if err != nil {
			return 0, 0, err
		}
		q.putUsed(taken+chains, head, uint32(wrote))
		chains++
		pos += wrote
		if !mrg && pos < need {
			fit = fitTooBig
			break
		}
	}
	if fit != fitDone {
		// Every chain walked was walked whole (the frame ran past its end)
		// and stays in the ring, its descriptors unspent.
		q.short = shortChains{valid: true, at: q.lastAvail, chains: chains, room: uint64(pos), descs: budget - q.budget}
		q.budget = budget
		return 0, fit, nil
	}
	if hdrLen == 12 && chains > 1 && nb[0] != nil && nb[1] != nil {
		nb[0][0] = byte(chains)
		nb[1][0] = byte(chains >> 8)
	}
	return chains, fitDone, nil
}

// shortFit judges a frame of need bytes by q.short, the chains at
// lastAvail an earlier frame did not fit in: known says whether it could.
// With MRG_RXBUF, chains the guest posted since are measured (walked
// without writing) and added to q.short; the frame is then written, by a
// walk from lastAvail, only when they hold it.
func (q *virtq) shortFit(m *memory, hdrLen int, mrg bool, need, avail, taken int) (frameFit, bool, error) {
	s := &q.short
	if avail < s.chains {
		return 0, false, violation("queue %d: avail idx went back to %d after %d", q.index, q.lastAvail+uint16(avail), q.lastAvail+uint16(s.chains))
	}
	limit := min(avail, q.num-taken) // chains the frame may use before we publish
	if !mrg {
		limit = min(limit, 1)
	}
	if s.chains > limit {
		return 0, false, nil // the used ring is full: walk, find fitNoRoom
	}
	for uint64(need) > s.room && s.chains < limit {
		head, err := q.head(s.chains)
		if err != nil {
			return 0, false, err
		}
		room, descs, whole, err := q.chainRoom(m, head, hdrLen, uint64(need)-s.room, q.budget-s.descs)
		if err != nil {
			return 0, false, err
		}
		if !whole {
			s.valid = false // room enough; the walk below writes the frame
			return 0, false, nil
		}
		s.chains++
		s.room += room
		s.descs += descs
	}
	// As writeFrame's walk would end, without walking.
	switch {
	case uint64(need) <= s.room:
		return 0, false, nil
	case !mrg && s.chains == 1:
		return fitTooBig, true, nil
	case s.chains == avail && avail == q.num:
		return fitTooBig, true, nil
	case s.chains == avail:
		return fitNoBufs, true, nil
	case taken == 0:
		return fitTooBig, true, nil
	}
	return fitNoRoom, true, nil
}

// fillChain writes the stream hdr||frame (||q.rest's pieces, for a frame
// written straight from another guest) from byte pos on into the chain at
// head and returns how many bytes went in. It records in nb where bytes 10
// and 11 of the stream (num_buffers) landed, so the caller can patch them
// once it knows the chain count.
func (q *virtq) fillChain(m *memory, head uint16, hdr, frame []byte, pos int, nb *[2][]byte) (int, error) {
	need := len(hdr) + len(frame) + q.restLen
	start := pos
	var room uint64 // the chain's, as far as walked
	var w chainWalker
	w.start(q, m, head, true, &q.budget)
	for pos < need {
		seg, ok, err := w.segment()
		if err != nil {
			return 0, err
		}
		if !ok {
			if room < uint64(len(hdr)) {
				return 0, q.smallChain(head, room, len(hdr))
			}
			break
		}
		room += uint64(len(seg))
		at := pos
		if pos < len(hdr) {
			c := copy(seg, hdr[pos:])
			for b := max(10, pos); b < min(12, pos+c); b++ {
				nb[b-10] = seg[b-pos : b-pos+1]
			}
			pos += c
			seg = seg[c:]
		}
		if pos >= len(hdr) {
			if q.rest == nil {
				pos += copy(seg, frame[pos-len(hdr):])
			} else {
				pos += copyPieces(seg, frame, q.rest, pos-len(hdr))
			}
		}
		if q.log != nil {
			q.log.mark(w.gpa, uint64(pos-at))
		}
	}
	return pos - start, nil
}

// fillOneDesc is fillChain's short walk for the chain most drivers post
// (Linux and DPDK with MRG_RXBUF): its first descriptor, in the region
// that answered last, holds the header and the whole frame. It checks
// what the walk would on that descriptor (budget, flags, bounds) and
// writes as fillChain would, which never reads past the descriptor that
// takes a frame's last byte; false means the chain is not such a one and
// nothing was written or paid: fillChain walks it from the start,
// checking everything again on its own reads of the table.
func (q *virtq) fillOneDesc(m *memory, head uint16, hdr *[gso.HdrSizeMrgRxbuf]byte, hdrLen int, frame []byte) bool {
	d := q.readDesc(head)
	need := uint64(hdrLen + len(frame))
	buf, in := m.r[m.last].within(d.addr, uint64(d.len))
	if d.flags&^descFNext != descFWrite || q.budget <= 0 || uint64(d.len) < need || need < gso.HdrSizeMrgRxbuf || !in {
		return false
	}
	q.budget--
	q.walked++
	b := buf[:need]
	// The header in two fixed-size moves, not a call to memmove: all 12
	// bytes of hdr, the last two of which the frame overwrites behind a
	// 10-byte header.
	*(*[8]byte)(b[:8]) = [8]byte(hdr[:8])
	*(*[4]byte)(b[8:12]) = [4]byte(hdr[8:12])
	copy(b[hdrLen:], frame)
	if q.log != nil {
		q.log.mark(d.addr, need)
	}
	return true
}

// chainRoom walks the chain at head as fillChain would, writing nothing,
// until it has seen want bytes of room (whole false) or its end (whole
// true), and returns the room seen and how many descriptors it walked, at
// most budget.
func (q *virtq) chainRoom(m *memory, head uint16, hdrLen int, want uint64, budget int) (room uint64, descs int, whole bool, err error) {
	left := budget
	var w chainWalker
	w.start(q, m, head, true, &left)
	for {
		seg, ok, err := w.segment()
		if err != nil {
			return 0, 0, false, err
		}
		if !ok {
			if room < uint64(hdrLen) {
				return 0, 0, false, q.smallChain(head, room, hdrLen)
			}
			return room, budget - left, true, nil
		}
		room += uint64(len(seg))
		if room >= want && w.more() {
			return room, budget - left, false, nil
		}
	}
}

// smallChain: a receive buffer must hold at least a virtio-net header
// (virtio 1.x, 5.1.6.3.1, with MRG_RXBUF; without, such a chain can never
// hold a frame and would stop the ring for good). Chains of nothing but
// zero-length descriptors would otherwise cost a walk each and give none.
func (q *virtq) smallChain(head uint16, room uint64, hdrLen int) error {
	return violation("queue %d: RX chain from descriptor %d offers %d bytes, less than the %d-byte virtio-net header",
		q.index, head, room, hdrLen)
}
