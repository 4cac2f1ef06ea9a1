package engine

import (
	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/ring"
)

// Superframes through the switch. A frame read with a virtio_net_hdr that
// leaves work to its receiver (a TSO superframe of up to 64 KiB, or a
// checksum to finish: gso.VirtioNetHdr.Offloaded) is judged once by
// forwardOne, then delivered per destination port: whole, header and all,
// to a port whose offloads take it (the TAP, a vhost-user guest with
// GUEST_TSO), and cut into MTU-sized frames, or finished, for any other
// port. The cut is made once per frame, on first need, into small pool
// buffers, and its pieces are queued to every port that needs them, as a
// flood queues one buffer many times.

// maxSegments is the most frames one superframe may be cut into: a 64 KiB
// TCP superframe of 1448-byte segments (MTU 1500) is 46, and a UDP socket
// may ask for up to 128 datagrams in one (UDP_MAX_SEGMENTS). One with
// more is dropped as gso-too-many-segments. (The TAP's cut as it reads,
// when no large buffer is free, stops at tapReadBudget.)
const maxSegments = 128

// largeBacklog is how many frames a port that pushed back may have queued
// and still be given a superframe whole: the few large buffers must not
// all sit in the queues of guests that do not read. Past it, the port
// gets the superframe cut, into small buffers, under the pool's usual
// guarantee.
const largeBacklog = 2

// cutScratch is forwardOne's state for the frame being switched.
type cutScratch struct {
	offloaded bool // the frame's header leaves work: deliver per port
	whole     bool // the frame is prepared to go whole (gso.PartialChecksum done)
	done      bool // the frame was cut or finished for ports without offloads (or could not be: segs is empty)
	// shared: another loop handed the frame over (crossloop.go); no loop
	// may write it, so it is finished in a copy.
	shared bool
	segs   []ring.Ref
}

func newCutScratch() cutScratch {
	return cutScratch{segs: make([]ring.Ref, 0, maxSegments)}
}

// Cutting. A superframe is cut into MTU-sized frames in user space on one
// path, whoever needs it cut: the delivery above (cutFrame), for a port
// that does not take it whole, or the TAP's read (tapTransport.cut) when
// no large buffer is free to switch it whole. Both ask segmentCount first
// and cut with portIO.cut, which counts: "cut" means one thing, a
// superframe split into its segments in pool buffers, counted once in
// portIO.superframesCut (and its segments as copies). Finishing a
// NEEDS_CSUM frame's checksum in place is not a cut.

// segmentCount says how many frames a superframe is cut into, or, when it
// cannot be cut into at most limit, the drop that says why.
func segmentCount(frame []byte, hdr gso.VirtioNetHdr, limit int) (n int, d Drop, ok bool) {
	n, err := gso.Segments(frame, hdr)
	switch {
	case err != nil:
		return 0, DropGSOInvalid, false
	case n > limit:
		return 0, DropGSOSegments, false
	}
	return n, 0, true
}

// cut cuts a superframe into segs, as many pool buffers as segmentCount
// said, and reports how many it filled; false when gso.Split refuses it
// (gso.Check passed it: never seen).
func (io *portIO) cut(frame []byte, hdr gso.VirtioNetHdr, segs []ring.Ref) (int, bool) {
	bufs := io.cutBufs[:len(segs)]
	for i, r := range segs {
		bufs[i] = io.pool.Buf(r)
	}
	k, err := gso.Split(frame, hdr, bufs, io.cutSizes, 0)
	if err != nil {
		return 0, false
	}
	for i := 0; i < k; i++ {
		io.pool.SetLen(segs[i], io.cutSizes[i])
	}
	io.copies += uint64(k)
	io.superframesCut++
	return k, true
}

// begin resets the scratch for a frame that carries offload work.
func (c *cutScratch) begin() {
	c.whole, c.done, c.shared = false, false, false
	c.segs = c.segs[:0]
}

// deliver queues frame r, which came in on in, to out: as it is, or, when
// it carries offload work out did not negotiate, as its cut.
func (l *loop) deliver(in, out *port, r ring.Ref, fromClient bool) {
	if !l.cut.offloaded {
		l.enqueue(in, out, r, fromClient)
		return
	}
	hdr := l.pool.Hdr(r)
	if !hdr.Offloaded() { // finished in place for an earlier port
		l.enqueue(in, out, r, fromClient)
		return
	}
	if out.offloads.Takes(*hdr) && l.mayQueueLarge(out, r) && l.prepareWhole(in, r) {
		l.enqueue(in, out, r, fromClient)
		return
	}
	if out.observer {
		// A monitor gets frames whole or not at all (the pool's rules).
		out.cnt.drops[DropPoolPressure]++
		return
	}
	for _, s := range l.cutFrame(in, r) {
		l.enqueue(in, out, s, fromClient)
	}
}

// mayQueueLarge keeps large buffers out of the queues of ports that do not
// take them away (see largeBacklog).
func (l *loop) mayQueueLarge(out *port, r ring.Ref) bool {
	if !l.pool.IsLarge(r) {
		return true
	}
	blocked := out.writeArmed || out.retryAt != 0
	return !blocked || out.txq.Len() < largeBacklog
}

// prepareWhole readies r to go whole, once: its checksum field gets the
// pseudo-header sum and its header the offsets of the frame's real
// headers (gso.PartialChecksum), so a device finishing or cutting it
// never acts on what the sender wrote there.
func (l *loop) prepareWhole(in *port, r ring.Ref) bool {
	c := &l.cut
	if c.whole {
		return true
	}
	if err := gso.PartialChecksum(l.pool.Frame(r), l.pool.Hdr(r)); err != nil {
		in.cnt.drops[DropGSOInvalid]++ // gso.Check passed it: cannot happen
		return false
	}
	c.whole = true
	return true
}

// cutFrame returns r cut for ports without offloads, cutting it on first
// need: a superframe into segments in small pool buffers, a frame with a
// checksum to finish finished in place (its header then asks nothing, so
// ports that took it whole get it finished too, which is as good). A frame
// that cannot be cut is counted once and goes to no such port.
func (l *loop) cutFrame(in *port, r ring.Ref) []ring.Ref {
	c := &l.cut
	if c.done {
		return c.segs
	}
	c.done = true
	frame, hdr := l.pool.Frame(r), l.pool.Hdr(r)
	if hdr.GSOType == gso.GSONone {
		return l.finishChecksum(in, r)
	}
	n, d, ok := segmentCount(frame, *hdr, maxSegments)
	switch {
	case !ok:
		in.cnt.drops[d]++
		return nil
	case l.pool.Free() < n+poolReserve*l.e.readMax:
		// The cut would eat into the reserve that keeps the switch
		// reading; the sender's TCP sends it again.
		in.cnt.drops[DropNoBuffer]++
		return nil
	}
	for i := 0; i < n; i++ {
		s, _ := l.pool.Get()
		c.segs = append(c.segs, s)
	}
	k, ok := l.io.cut(frame, *hdr, c.segs)
	if !ok {
		l.releaseBuffers(c.segs)
		c.segs = c.segs[:0]
		in.cnt.drops[DropGSOInvalid]++
		return nil
	}
	l.releaseBuffers(c.segs[k:])
	c.segs = c.segs[:k]
	return c.segs
}

// finishChecksum finishes a frame's checksum for ports without checksum
// offload: in place (its header then asks nothing, so ports that took it
// whole get it finished too, which is as good), or, for a frame another
// loop handed over, in a copy.
func (l *loop) finishChecksum(in *port, r ring.Ref) []ring.Ref {
	c := &l.cut
	fin := r
	if c.shared {
		s, ok := l.pool.Get()
		if !ok {
			in.cnt.drops[DropNoBuffer]++
			return nil
		}
		l.pool.SetLen(s, copy(l.pool.Buf(s), l.pool.Frame(r)))
		*l.pool.Hdr(s) = *l.pool.Hdr(r)
		l.io.copies++
		fin = s
	} else {
		l.pool.Hold(r) // released with the other segments' own reference
	}
	frame, hdr := l.pool.Frame(fin), l.pool.Hdr(fin)
	if gso.CompleteChecksum(frame, *hdr) != nil {
		l.pool.Release(fin)
		in.cnt.drops[DropGSOInvalid]++
		return nil
	}
	hdr.Flags &^= gso.FlagNeedsCsum
	hdr.CsumStart, hdr.CsumOffset = 0, 0
	c.segs = append(c.segs, fin)
	return c.segs
}

// endCut lets go of the cut's own references once r has been delivered
// everywhere: the queues hold theirs. It reports whether r was cut into
// segments, which the caller flushes before the next frame: a batch of
// superframes cut for one port would overflow its queue otherwise.
func (l *loop) endCut() (cut bool) {
	c := &l.cut
	if !c.offloaded || len(c.segs) == 0 {
		return false
	}
	l.releaseBuffers(c.segs)
	cut = len(c.segs) > 1
	c.segs = c.segs[:0]
	return cut
}

// droppedGSO counts (and, rate-limited, logs) a frame whose offload header
// lies about it.
func (l *loop) droppedGSO(in *port, v gso.Reason) {
	in.cnt.gsoDrops[v]++
	l.logDrop(in, v.String())
}
