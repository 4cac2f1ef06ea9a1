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
	segs      []ring.Ref
	bufs      [][]byte
	sizes     []int
}

func newCutScratch() cutScratch {
	return cutScratch{segs: make([]ring.Ref, 0, maxSegments), bufs: make([][]byte, maxSegments),
		sizes: make([]int, maxSegments)}
}

// begin resets the scratch for a frame that carries offload work.
func (c *cutScratch) begin() {
	c.whole, c.done = false, false
	c.segs = c.segs[:0]
}

// deliver queues frame r, which came in on in, to out: as it is, or, when
// it carries offload work out did not negotiate, as its cut.
func (e *Engine) deliver(in, out *port, r ring.Ref, fromClient bool) {
	if !e.cut.offloaded {
		e.enqueue(in, out, r, fromClient)
		return
	}
	hdr := e.pool.Hdr(r)
	if !hdr.Offloaded() { // finished in place for an earlier port
		e.enqueue(in, out, r, fromClient)
		return
	}
	if out.offloads.Takes(*hdr) && e.mayQueueLarge(out, r) && e.prepareWhole(in, r) {
		e.enqueue(in, out, r, fromClient)
		return
	}
	if out.observer {
		// A monitor gets frames whole or not at all (the pool's rules).
		out.cnt.drops[DropPoolPressure]++
		return
	}
	for _, s := range e.cutFrame(in, r) {
		e.enqueue(in, out, s, fromClient)
	}
}

// mayQueueLarge keeps large buffers out of the queues of ports that do not
// take them away (see largeBacklog).
func (e *Engine) mayQueueLarge(out *port, r ring.Ref) bool {
	if !e.pool.IsLarge(r) {
		return true
	}
	blocked := out.writeArmed || out.retryAt != 0
	return !blocked || out.txq.Len() < largeBacklog
}

// prepareWhole readies r to go whole, once: its checksum field gets the
// pseudo-header sum and its header the offsets of the frame's real
// headers (gso.PartialChecksum), so a device finishing or cutting it
// never acts on what the sender wrote there.
func (e *Engine) prepareWhole(in *port, r ring.Ref) bool {
	c := &e.cut
	if c.whole {
		return true
	}
	if err := gso.PartialChecksum(e.pool.Frame(r), e.pool.Hdr(r)); err != nil {
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
func (e *Engine) cutFrame(in *port, r ring.Ref) []ring.Ref {
	c := &e.cut
	if c.done {
		return c.segs
	}
	c.done = true
	frame, hdr := e.pool.Frame(r), e.pool.Hdr(r)
	if hdr.GSOType == gso.GSONone {
		if gso.CompleteChecksum(frame, *hdr) != nil {
			in.cnt.drops[DropGSOInvalid]++
			return nil
		}
		hdr.Flags &^= gso.FlagNeedsCsum
		hdr.CsumStart, hdr.CsumOffset = 0, 0
		c.segs = append(c.segs, r)
		e.pool.Hold(r) // released with the other segments' own reference
		return c.segs
	}
	n, err := gso.Segments(frame, *hdr)
	switch {
	case err != nil:
		in.cnt.drops[DropGSOInvalid]++
		return nil
	case n > maxSegments:
		in.cnt.drops[DropGSOSegments]++
		return nil
	case e.pool.Free() < n+poolReserve*e.readMax:
		// The cut would eat into the reserve that keeps the switch
		// reading; the sender's TCP sends it again.
		in.cnt.drops[DropNoBuffer]++
		return nil
	}
	for i := 0; i < n; i++ {
		s, _ := e.pool.Get()
		c.segs = append(c.segs, s)
		c.bufs[i] = e.pool.Buf(s)
	}
	k, err := gso.Split(frame, *hdr, c.bufs[:n], c.sizes, 0)
	if err != nil {
		e.releaseBuffers(c.segs)
		c.segs = c.segs[:0]
		in.cnt.drops[DropGSOInvalid]++
		return nil
	}
	for i := 0; i < k; i++ {
		e.pool.SetLen(c.segs[i], c.sizes[i])
	}
	e.releaseBuffers(c.segs[k:])
	c.segs = c.segs[:k]
	e.io.copies += uint64(k)
	e.superframesCut++
	return c.segs
}

// endCut lets go of the cut's own references once r has been delivered
// everywhere: the queues hold theirs. It reports whether r was cut into
// segments, which the caller flushes before the next frame: a batch of
// superframes cut for one port would overflow its queue otherwise.
func (e *Engine) endCut() (cut bool) {
	c := &e.cut
	if !c.offloaded || len(c.segs) == 0 {
		return false
	}
	e.releaseBuffers(c.segs)
	cut = len(c.segs) > 1
	c.segs = c.segs[:0]
	return cut
}

// droppedGSO counts (and, rate-limited, logs) a frame whose offload header
// lies about it.
func (e *Engine) droppedGSO(in *port, v gso.Reason) {
	in.cnt.gsoDrops[v]++
	e.logDrop(in, v.String())
}
