package engine

import (
	"errors"
	"fmt"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/ring"
	"github.com/vknetd/vknetd/vhostuser"
)

// vhostTransport is a QEMU (or DPDK virtio-user) guest on shared-memory
// virtio rings: frames move with one copy and no syscall per frame. The
// port's fd is the vhost-user socket; the guest's kick eventfds are polled
// beside it under the port's id (subTXKick, subRXKick), and the device
// package decides everything that touches guest memory.
type vhostTransport struct {
	io    *portIO
	dev   *vhostuser.Device
	poll  poller
	id    uint32
	kicks [2]int // the kick fds registered with the poller, by queue; -1 none

	bufs  [][]byte // the batch's pool buffers or frames, as the device takes them
	sizes []int
	hdrs  []gso.VirtioNetHdr // the batch's virtio_net_hdrs, both ways
	more  bool               // the TX ring may hold frames the guest will not kick for
	// refs are the pool buffers of the read under way, for large: a
	// superframe's buffer replaces its slot's small one.
	refs []ring.Ref
	// starved: the read stopped at a superframe for want of a large
	// buffer; the engine reads again when one is free (largeWaiter).
	starved bool
	// violated: the device reported the guest breaking the rules (once
	// counted, the port closes).
	violated bool
}

// The sub-numbers of a vhost-user port's fds in the poller.
const (
	subSocket = 0 // the port's own fd
	subTXKick = 1 // the guest sent frames
	subRXKick = 2 // the guest posted receive buffers
)

// newVhostTransport serves the guest on fd; mem is the port's account of
// the guest memory its device maps (guestmem.go).
func (e *Engine) newVhostTransport(fd int, id uint32, name string, mem *guestMemory) (*vhostTransport, error) {
	t := &vhostTransport{io: &e.io, poll: e.poll, id: id, kicks: [2]int{-1, -1},
		bufs: make([][]byte, e.cfg.Batch), sizes: make([]int, e.cfg.Batch),
		hdrs: make([]gso.VirtioNetHdr, e.cfg.Batch)}
	// Offloads only with large buffers for the guest's superframes.
	offloads := e.cfg.Offloads && e.pool.CapLarge() > 0
	dev, err := vhostuser.NewDevice(fd, vhostuser.Config{Note: func(msg string) {
		e.clientLog.Info("vhost-user request ignored", "port", id, "client", name, "request", msg)
	}, Offloads: offloads, Large: t.large, Memory: mem.set})
	if err != nil {
		return nil, err
	}
	t.dev = dev
	return t, nil
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

func (*vhostTransport) kind() string { return "vhost-user" }

// failed passes on err, counting once the guest breaking the protocol or
// its rings (DropVhostViolation): the engine closes the port and logs the
// error, which says what the guest did.
func (t *vhostTransport) failed(p *port, err error) error {
	if !t.violated && errors.Is(err, vhostuser.ErrViolation) {
		t.violated = true
		p.cnt.drops[DropVhostViolation]++
	}
	return err
}

func (t *vhostTransport) buffered() bool { return t.more }

// ready serves the socket's messages and the guest's kicks.
func (t *vhostTransport) ready(p *port, sub uint8, hangup bool) (read, write bool, err error) {
	switch sub {
	case subTXKick:
		return true, false, t.failed(p, t.dev.DrainKick(vhostuser.TXQ))
	case subRXKick:
		return false, true, t.failed(p, t.dev.DrainKick(vhostuser.RXQ))
	}
	ch, err := t.dev.HandleSocket()
	if errors.Is(err, vhostuser.ErrHangup) {
		return false, false, errPeerClosed
	}
	if err != nil {
		return false, false, t.failed(p, err)
	}
	if ch&vhostuser.KickChanged != 0 {
		if err := t.watchKicks(); err != nil {
			return false, false, err
		}
	}
	// What the guest takes whole is known once it set its features, and
	// may change when it resets its card.
	p.offloads = t.dev.Offloads()
	if ch&vhostuser.StateChanged != 0 && t.dev.Ready() {
		// A ring that (re)started may hold frames from before a stop or
		// a reconnect, and the guest will not kick for those.
		return true, true, nil
	}
	return false, false, nil
}

// watchKicks follows the guest's kick fds into the poller. Replaced fds
// were closed by the device, which took them out of epoll already; their
// numbers may be the new ones.
func (t *vhostTransport) watchKicks() error {
	for q, sub := range [2]uint8{vhostuser.RXQ: subRXKick, vhostuser.TXQ: subTXKick} {
		fd := t.dev.KickFD(q)
		if fd == t.kicks[q] {
			continue
		}
		if t.kicks[q] >= 0 {
			t.poll.remove(t.kicks[q]) // gone with its close already, most likely
		}
		t.kicks[q] = -1
		if fd < 0 {
			continue
		}
		if err := t.poll.add(fd, subToken(t.id, sub)); err != nil {
			return fmt.Errorf("watching the guest's kick fd: %w", err)
		}
		t.kicks[q] = fd
	}
	return nil
}

// read takes a batch of frames from the guest's TX ring into pool buffers.
func (t *vhostTransport) read(p *port, refs []ring.Ref) (int, error) {
	bufs := t.bufs[:len(refs)]
	for i, r := range refs {
		bufs[i] = t.io.pool.Buf(r)
	}
	before := t.dev.Stats()
	t.refs, t.starved = refs, false
	n, more, err := t.dev.ReadTX(bufs, t.sizes, t.hdrs)
	t.refs = nil
	// Starved, the ring's next frame can only wait for a large buffer:
	// reading again at once would spin until one is free.
	t.more = more && err == nil && !t.starved
	// Frames the device dropped before they reached a buffer of ours are
	// counted as the same frames on a socket would be: received, and
	// dropped as oversize (longer than our buffers) or runt (no frame
	// after the virtio-net header).
	after := t.dev.Stats()
	over, short := after.TXOversize-before.TXOversize, after.TXShort-before.TXShort
	p.cnt.rxFrames += over + short
	p.cnt.drops[DropOversize] += over
	p.cnt.drops[DropRunt] += short
	// A header asking for an offload the guest did not negotiate broke
	// the protocol; the device dropped its frame.
	bad := after.TXBadHdr - before.TXBadHdr
	p.cnt.rxFrames += bad
	p.cnt.drops[DropOffloadNotNegotiated] += bad
	// Headers with bits no driver may send tell the lie gso.Check names
	// when it sees them on an offloaded frame: counted under the same
	// names, whatever else the header asked for.
	flags, gsoType := after.TXHdrFlags-before.TXHdrFlags, after.TXHdrGSOType-before.TXHdrGSOType
	p.cnt.rxFrames += flags + gsoType
	p.cnt.gsoDrops[gso.FlagsInvalid] += flags
	p.cnt.gsoDrops[gso.GSOTypeUnknown] += gsoType
	for i := 0; i < n; i++ {
		t.io.pool.SetLen(refs[i], t.sizes[i])
		if t.hdrs[i] != (gso.VirtioNetHdr{}) { // Get zeroed it
			*t.io.pool.Hdr(refs[i]) = t.hdrs[i]
		}
	}
	return n, t.failed(p, err)
}

// write puts queued frames into the guest's RX buffers. A guest without
// buffers is back-pressure: the rest stays queued until it kicks its RX
// ring.
func (t *vhostTransport) write(p *port) error {
	frames := t.bufs[:min(p.txq.Len(), len(t.bufs))]
	for i := range frames {
		frames[i] = t.io.pool.Frame(p.txq.At(i))
	}
	// Headers only to a guest that negotiated offloads: forwardOne gave
	// it only frames whose header it takes. Any other guest gets zero
	// headers: it asked for nothing, and DATA_VALID is not its to see.
	var hdrs []gso.VirtioNetHdr
	if p.offloads != 0 {
		hdrs = t.hdrs[:len(frames)]
		for i := range frames {
			hdrs[i] = *t.io.pool.Hdr(p.txq.At(i))
		}
	}
	before := t.dev.Stats().RXOversize
	n, err := t.dev.WriteRX(frames, hdrs)
	// Frames the guest's buffers can never hold are taken and dropped; the
	// bytes count them too (they are rare: a guest posting tiny buffers).
	refused := t.dev.Stats().RXOversize - before
	p.cnt.drops[DropSendError] += refused
	p.cnt.txFrames += uint64(n) - refused
	for i := 0; i < n; i++ {
		r := p.txq.At(i)
		p.cnt.txBytes += uint64(t.io.pool.Len(r))
		t.io.pool.Release(r)
	}
	p.txq.Drop(n)
	switch {
	case err != nil:
		return t.failed(p, err)
	case n < len(frames):
		return errWouldBlock
	}
	return nil
}

// waitsForLarge: the last read stopped at a superframe no large buffer
// was free for.
func (t *vhostTransport) waitsForLarge() bool { return t.starved }

// waitWritable: the RX kick is always polled; the device asks the guest
// for it when the ring runs out of buffers.
func (*vhostTransport) waitWritable(*port, bool) error { return nil }

func (t *vhostTransport) close(p *port) { t.dev.Close() }
