package engine

import (
	"errors"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/ring"
	"github.com/vknetd/vknetd/vhostuser"
)

// vhostTransport is a QEMU (or DPDK virtio-user) guest on shared-memory
// virtio rings: frames move with one copy and no syscall per frame. The
// port's fd is the vhost-user socket; the guest's kick eventfds are polled
// beside it (sub-number 1+ring: the transport names them in its
// readiness, the engine polls them), and the device package decides
// everything that touches guest memory.
type vhostTransport struct {
	io  *portIO
	dev *vhostuser.Device
	// q is the data path this transport serves: the device's own, or,
	// for a queue handle (apart), the pairs another loop serves for the
	// port (spread.go). Only the port's own transport handles the socket
	// and closes the device.
	q     *vhostuser.Queues
	apart bool

	bufs  [][]byte // the batch's pool buffers or frames, as the device takes them
	sizes []int
	hdrs  []gso.VirtioNetHdr // the batch's virtio_net_hdrs, both ways
	// refs are the pool buffers of the read under way, for large: a
	// superframe's buffer replaces its slot's small one.
	refs []ring.Ref
	// starved: the read stopped at a superframe for want of a large
	// buffer; the engine reads again when one is free (waitsLarge).
	starved bool
	// offloads: the guest negotiated offloads; its frames go with their
	// headers.
	offloads bool
	// violated: the device reported the guest breaking the rules (once
	// counted, the port closes).
	violated bool
	// heldStale: the device's state changed since a supervisor was last
	// told it (or could be); heldSent: the supervisor holds a state of it.
	heldStale, heldSent bool
}

// The sub-numbers of a vhost-user port's fds in the poller: its own (0),
// and the kick fd of the guest's ring q as 1+q (readiness.watch[q]): an
// odd ring is a TX ring (the guest sent frames), an even one an RX ring
// (it posted receive buffers).
const subSocket = 0

// A multi-queue guest's pairs share one device, its memory table and its
// socket, and one port's MACs; with --workers they are served by several
// loops once the device runs quiet (spread.go): each loop's transport
// serves its pairs' rings through a vhostuser.Queues of its own.
var _ [maxSubFDs - vhostuser.MaxQueues]struct{} // every ring's kick has a sub-number
var _ [maxPairs - vhostuser.MaxQueuePairs]struct{}

// newVhostTransport serves the guest on fd; mem is the port's account of
// the guest memory its device maps (guestmem.go).
func (e *Engine) newVhostTransport(io *portIO, fd int, id uint32, name string, mem *guestMemory, fds *guestFds) (*vhostTransport, error) {
	t := newVhostScratch(io)
	// Offloads only with large buffers for the guest's superframes.
	offloads := e.cfg.Offloads && e.pool.CapLarge() > 0
	dev, err := vhostuser.NewDevice(fd, vhostuser.Config{Note: func(msg string) {
		e.clientLog.Info("vhost-user request ignored", "port", id, "client", name, "request", msg)
	}, Offloads: offloads, Large: t.large, Memory: mem.set, Fds: fds.set})
	if err != nil {
		return nil, err
	}
	t.dev, t.q = dev, &dev.Queues
	dev.SplitTX(splitHead, oneCopyOver)
	return t, nil
}

// newVhostScratch is a transport on io without a device yet, its scratch
// sized for a read or a write of vhostReadBudget frames.
func newVhostScratch(io *portIO) *vhostTransport {
	return &vhostTransport{io: io, bufs: make([][]byte, vhostReadBudget),
		sizes: make([]int, vhostReadBudget), hdrs: make([]gso.VirtioNetHdr, vhostReadBudget)}
}

// spread says some of the guest's pairs are served by other loops.
func (t *vhostTransport) spread() bool { return !t.apart && !t.q.ServesAll() }

// spreadPairs: the pairs in use, once the device runs and the supervisor
// (if any) holds its latest state, which cannot be written while pairs
// are apart.
func (t *vhostTransport) spreadPairs() uint8 {
	if t.apart || t.violated {
		return 0
	}
	return t.dev.SpreadPairs()
}

// serveApart serves pairs for a queue handle on the loop of io.
func (t *vhostTransport) serveApart(pairs uint8, io *portIO) transport {
	h := newVhostScratch(io)
	h.dev, h.apart, h.offloads = t.dev, true, t.offloads
	h.q = t.dev.Serve(pairs, h.large)
	return h
}

// rejoin takes back the pairs of h, a transport serveApart made.
func (t *vhostTransport) rejoin(h transport) { t.dev.Rejoin(h.(*vhostTransport).q) }

func (t *vhostTransport) rxPair(frame []byte) (int, bool) { return t.dev.RXPair(frame) }

// pairFrames is what t's pairs moved: the guest's TX rings are what the
// switch received, its RX rings what it sent; and the kicks t read.
func (t *vhostTransport) pairFrames() (c pairCounts) {
	st := t.q.Stats()
	copy(c.rx[:], st.PairTXFrames[:])
	copy(c.tx[:], st.PairRXFrames[:])
	c.kicks = st.Kicks
	return c
}

// kicks are the kick fds of the rings of pairs.
func (t *vhostTransport) kicks(pairs uint8) (w [maxSubFDs]int) {
	for q := range w {
		w[q] = -1
		if pairs&(1<<(q/2)) != 0 {
			w[q] = t.dev.KickFD(q)
		}
	}
	return w
}

// large gives the device a large pool buffer for a guest superframe that
// outgrew the small one in slot, which goes back to the pool; nil while
// none is free, and the superframe waits in the guest's ring.
func (t *vhostTransport) large(slot int) []byte {
	if t.io.pool.IsLarge(t.refs[slot]) {
		return t.io.pool.Buf(t.refs[slot]) // taken for a frame the device dropped since
	}
	r, ok := t.io.pool.GetLarge()
	if !ok {
		t.starved = true
		return nil
	}
	t.io.pool.Release(t.refs[slot])
	t.refs[slot] = r
	return t.io.pool.Buf(r)
}

// caps: the guest's kick fds are polled beside the socket, and its RX
// kick says when it has room again.
func (t *vhostTransport) caps() transportCaps {
	if t.apart {
		// A queue handle: kicks, rings and frames; the socket stays with
		// the port's own transport.
		return transportCaps{kind: "vhost-user", readBudget: vhostReadBudget, eventSource: true, writeReadyElsewhere: true, rings: t, direct: t, pairs: t}
	}
	return transportCaps{kind: "vhost-user", readBudget: vhostReadBudget, eventSource: true, writeReadyElsewhere: true, rings: t, direct: t, held: t, spreader: t, pairs: t}
}

// pollRings looks at the guest's rings: frames posted on TX, buffers
// posted on RX.
func (t *vhostTransport) pollRings(wantRead, wantWrite bool) (read, write bool) {
	return wantRead && t.q.TXPending(), wantWrite && t.q.RXPending()
}

// busyPoll leaves the guest's TX kicks off while the loop polls, and
// turns them on again when it stops.
func (t *vhostTransport) busyPoll(on bool) (bool, error) {
	return t.q.SetBusyPoll(on)
}

// failed passes on err, counting once in dropped the guest breaking the
// protocol or its rings (DropVhostViolation): the engine closes the port
// and logs the error, which says what the guest did.
func (t *vhostTransport) failed(err error, dropped *tally) error {
	if !t.violated && errors.Is(err, vhostuser.ErrViolation) {
		t.violated = true
		dropped.drop(DropVhostViolation, 1)
	}
	return err
}

// ready serves the socket's messages and the guest's kicks.
func (t *vhostTransport) ready(sub uint8, hangup bool) readiness {
	var r readiness
	if sub != subSocket {
		ring := int(sub) - 1
		if t.q.Pairs()&(1<<(ring/2)) == 0 {
			return r // served by another loop now, which polls its kick
		}
		r.err = t.failed(t.q.DrainKick(ring), &r.dropped)
		r.read, r.write = ring%2 == 1, ring%2 == 0
		return r
	}
	if t.apart || t.spread() {
		return r // the engine gathers the pairs first (spread.go)
	}
	ch, err := t.dev.HandleSocket()
	if errors.Is(err, vhostuser.ErrHangup) {
		r.err = errPeerClosed
		return r
	}
	if err != nil {
		r.err = t.failed(err, &r.dropped)
		return r
	}
	if ch&vhostuser.KickChanged != 0 {
		// The kick fds to poll now; replaced ones were closed by the
		// device, which took them out of epoll already.
		r.watch, r.watchChanged = kickFDs(t.dev), true
	}
	if ch&vhostuser.ExportChanged != 0 {
		t.heldStale = true
	}
	r.heldChanged = t.heldStale
	// What the guest takes whole is known once it set its features, and
	// may change when it resets its card.
	r.offloads, r.offloadsKnown = t.dev.Offloads(), true
	t.offloads = r.offloads != 0
	if ch&vhostuser.StateChanged != 0 {
		// QEMU stops the source's rings at the switch-over: the guest
		// has left, and its MAC may follow it at once (migrate.go).
		r.stopped, r.stateKnown = t.dev.Stopped(), true
	}
	if ch&vhostuser.StateChanged != 0 && t.dev.Ready() {
		// A ring that (re)started may hold frames from before a stop or
		// a reconnect, and the guest will not kick for those.
		r.read, r.write = true, true
	}
	return r
}

// read takes a batch of frames from the guest's TX ring into pool buffers.
func (t *vhostTransport) read(refs []ring.Ref, _ bool) readResult {
	bufs := t.bufs[:len(refs)]
	for i, r := range refs {
		bufs[i] = t.io.pool.Buf(r)
	}
	t.refs, t.starved = refs, false
	r, err := t.q.ReadTXBatch(bufs, t.sizes, t.hdrs)
	t.refs = nil
	n := r.N
	// Starved, the ring's next frame can only wait for a large buffer:
	// reading again at once would spin until one is free.
	res := readResult{n: n, buffered: r.More && err == nil && !t.starved, waitsLarge: t.starved}
	// Frames the device dropped before they reached a buffer of ours are
	// counted as the same frames on a socket would be: received, and
	// dropped as oversize (longer than our buffers) or runt (no frame
	// after the virtio-net header).
	if r.Drops != (vhostuser.TXDrops{}) {
		d := &res.dropped
		d.dropReceived(DropOversize, uint32(r.Drops.Oversize))
		d.dropReceived(DropRunt, uint32(r.Drops.Short))
		// A header asking for an offload the guest did not negotiate
		// broke the protocol; the device dropped its frame.
		d.dropReceived(DropOffloadNotNegotiated, uint32(r.Drops.BadHdr))
		// Headers with bits no driver may send tell the lie gso.Check
		// names when it sees them on an offloaded frame: counted under
		// the same names, whatever else the header asked for.
		d.dropGSO(gso.FlagsInvalid, uint32(r.Drops.HdrFlags))
		d.dropGSO(gso.GSOTypeUnknown, uint32(r.Drops.HdrGSOType))
	}
	for i := 0; i < n; i++ {
		t.io.pool.SetLen(refs[i], t.sizes[i])
		if t.hdrs[i] != (gso.VirtioNetHdr{}) { // Get zeroed it
			*t.io.pool.Hdr(refs[i]) = t.hdrs[i]
		}
	}
	res.err = t.failed(err, &res.dropped)
	return res
}

// write puts queued frames into the guest's RX buffers. A guest without
// buffers is back-pressure: the rest stays queued until it kicks its RX
// ring.
func (t *vhostTransport) write(q txView) writeResult {
	frames := t.bufs[:min(q.Len(), len(t.bufs))]
	for i := range frames {
		frames[i] = t.io.pool.Frame(q.At(i))
	}
	// Headers only to a guest that negotiated offloads: forwardOne gave
	// it only frames whose header it takes. Any other guest gets zero
	// headers: it asked for nothing, and DATA_VALID is not its to see.
	var hdrs []gso.VirtioNetHdr
	if t.offloads {
		hdrs = t.hdrs[:len(frames)]
		for i := range frames {
			hdrs[i] = *t.io.pool.Hdr(q.At(i))
		}
	}
	r, err := t.q.WriteRXBatch(frames, hdrs)
	n, refused := r.N, r.Oversize+r.Stray
	// Frames the guest's buffers can never hold are taken and dropped; the
	// bytes count them too (they are rare: a guest posting tiny buffers).
	res := writeResult{done: n, frames: uint64(n) - refused}
	res.dropped.drop(DropSendError, uint32(refused))
	for _, f := range frames[:n] {
		res.bytes += uint64(len(f))
	}
	switch {
	case err != nil:
		res.err = t.failed(err, &res.dropped)
	case n < len(frames):
		// The guest has no buffers: its RX kick, always polled, says
		// when it posts more (the device asks it to).
		res.blocked = true
	}
	return res
}

// split says frame slot of the last read left its rest in the guest's
// memory (Device.SplitTX).
func (t *vhostTransport) split(slot int) bool { return t.q.Split(slot) }

// fillRest copies split frame slot's rest from the guest's memory.
func (t *vhostTransport) fillRest(slot int, buf []byte, dropped *tally) error {
	return t.failed(t.q.CopyRest(slot, buf), dropped)
}

// releaseRead gives the guest back the chains of its split frames.
func (t *vhostTransport) releaseRead() { t.q.ReleaseTX() }

// writeFrom writes split frame slot of src's guest into this guest's RX
// buffers with one copy of its rest, behind a header that asks nothing:
// split frames are those whose header asks nothing, and DATA_VALID is
// not a guest's to give.
func (t *vhostTransport) writeFrom(src directIO, slot int, head []byte, dropped, srcDropped *tally) (directWrite, error, error) {
	from := src.(*vhostTransport)
	r, err, srcErr := t.q.WriteRXFrom(from.q, slot, head)
	switch {
	case r.Stray > 0:
		return directOversize, nil, nil // not this loop's pair: dropped, as write does
	case srcErr != nil:
		return directNoRoom, nil, from.failed(srcErr, srcDropped)
	case err != nil:
		return directNoRoom, t.failed(err, dropped), nil
	case r.Oversize > 0:
		return directOversize, nil, nil
	case r.N > 0:
		return directWritten, nil, nil
	}
	return directNoRoom, nil, nil
}

// endWrites publishes the frames writeFrom wrote.
func (t *vhostTransport) endWrites() { t.q.FlushRX() }

func (t *vhostTransport) close() {
	if !t.apart {
		t.dev.Close()
	}
}

// kickFDs are the fds a guest's port wants polled besides its socket:
// ring q's kick eventfd as sub 1+q, -1 where the ring has none.
func kickFDs(dev *vhostuser.Device) (w [maxSubFDs]int) {
	for q := range w {
		w[q] = dev.KickFD(q)
	}
	return w
}
