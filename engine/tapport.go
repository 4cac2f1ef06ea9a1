package engine

import (
	"errors"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/ring"
	"github.com/vknetd/vknetd/tap"
)

// tapReadBudget is how many buffers the TAP asks for per read with
// offloads on: a 64 KiB TCP superframe of 1448-byte segments (MTU 1500
// with timestamps) is cut into 46 frames. A superframe that needs more
// (a gso_size far below the MTU) is dropped as gso-too-many-segments.
const tapReadBudget = maxReadBudget

// tapTransport is the host's side of the switch: the TAP device, read and
// written one frame per syscall by package tap. Its fd belongs to whoever
// opened the TAP, who closes it after Run.
//
// With offloads (Config.TapVnetHdr) every read and write carries a
// virtio_net_hdr. A read goes to [header][a pool buffer][a large buffer]:
// a plain frame lands in the pool buffer as before; a superframe (up to
// 64 KiB) runs on into the large buffer, which then takes its head and
// replaces the small one, so the superframe is switched whole with its
// header (forwardOne cuts it for the ports that need it cut). Only when
// every large buffer is in use does the read go on into the TAP's own
// overflow buffer instead (when even the read's first frame finds none:
// after that the read ends and the next one waits for the switch to send
// what it holds), and the superframe is cut right there into as many pool
// buffers as it has segments; one that does not fit the rest of
// a read's buffers waits there for the next read (buffered). Writes go
// behind each frame's own header: a superframe from a guest goes to the
// kernel whole, in one write, for it to cut or take as it is (TSO).
type tapTransport struct {
	polledByEngine
	io      *portIO
	fd      int
	bufs    [][]byte // the batch's buffers, as tap wants them
	sizes   []int
	refused []bool

	// Offloads only.
	vnet    bool
	mtu     int
	hdrIn   [tap.VnetHdrSize]byte
	hdrOut  [][tap.VnetHdrSize]byte // the batch's headers, encoded
	hdrBufs [][]byte                // hdrOut's, as tap wants them
	spare   ring.Ref                // a large buffer to read the next superframe into, or -1
	over    []byte                  // gso.MaxFrameLen: where a superframe is cut when no large buffer is free
	pending int                     // length of a superframe in over waiting for buffers, or 0
	pendHdr gso.VirtioNetHdr        // its header
}

func newTapTransport(io *portIO, fd int, vnet bool, mtu int) *tapTransport {
	t := &tapTransport{io: io, fd: fd, bufs: make([][]byte, io.batch), sizes: make([]int, io.batch),
		refused: make([]bool, io.batch), vnet: vnet, mtu: mtu, spare: -1}
	if vnet {
		t.over = make([]byte, gso.MaxFrameLen)
		t.hdrOut = make([][tap.VnetHdrSize]byte, io.batch)
		t.hdrBufs = make([][]byte, io.batch)
		for i := range t.hdrBufs {
			t.hdrBufs[i] = t.hdrOut[i][:]
		}
	}
	return t
}

func (t *tapTransport) caps() transportCaps {
	c := transportCaps{kind: "tap"}
	if t.vnet {
		c.readBudget = tapReadBudget
		// What the kernel takes in a write (virtio_net_hdr_to_skb):
		// tap.Open asked TUNSETOFFLOAD for the same, for its reads.
		c.offloads = gso.OffloadCsum | gso.OffloadTSO4 | gso.OffloadTSO6 | gso.OffloadECN
	}
	return c
}

func (t *tapTransport) read(refs []ring.Ref, _ bool) readResult {
	var res readResult
	if t.vnet {
		res.n, res.err = t.readVnet(refs, &res.dropped)
		// A superframe read waits in the overflow buffer.
		res.buffered = t.pending > 0
		return res
	}
	bufs := t.bufs[:min(len(refs), len(t.bufs))]
	for i := range bufs {
		bufs[i] = t.io.pool.Buf(refs[i])
	}
	n, err := tap.ReadFrames(t.fd, bufs, t.sizes)
	t.io.syscalls += uint64(n)
	if n < len(bufs) {
		t.io.syscalls++ // the read that found nothing more
	}
	for i := 0; i < n; i++ {
		t.io.pool.SetLen(refs[i], t.sizes[i])
	}
	res.n, res.err = n, err
	return res
}

// overflow is where the next read's bytes past a pool buffer go: a large
// buffer of the pool (large true) while one is free, else over.
func (t *tapTransport) overflow() (buf []byte, large bool) {
	if t.spare < 0 {
		if r, ok := t.io.pool.GetLarge(); ok {
			t.spare = r
		}
	}
	if t.spare >= 0 {
		return t.io.pool.Buf(t.spare), true
	}
	return t.over, false
}

// readVnet reads frames with their virtio_net_hdr until the TAP has none
// left or refs are used up. A superframe replaces its ref with the large
// buffer it was read into, or, with none free, is cut into refs. What it
// drops it counts in dropped.
func (t *tapTransport) readVnet(refs []ring.Ref, dropped *tally) (int, error) {
	n := 0
	if t.pending > 0 {
		k, wait := t.cut(refs, dropped)
		if wait {
			// Fewer buffers than segments even at the start of a read:
			// the pool is short. The superframe is lost, as a frame
			// with no buffer to read into would stay in the kernel.
			t.pending = 0
			dropped.drop(DropNoBuffer, 1)
			return 0, nil
		}
		n = k
	}
	for n < len(refs) {
		buf := t.io.pool.Buf(refs[n])
		over, large := t.overflow()
		if !large && n > 0 {
			// The large buffers are all in this read's frames (or
			// queues): switch these, which frees them, before reading
			// on, rather than cut the next superframe for ports that
			// take it whole. The TAP stays readable (level-triggered).
			return n, nil
		}
		// A superframe's tail lands in over right where it belongs
		// behind its head, which is copied in front of it.
		m, err := tap.ReadVnetFrame(t.fd, t.hdrIn[:], buf, over[len(buf):])
		t.io.syscalls++
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			return n, nil
		case err != nil:
			return n, err
		case m < len(t.hdrIn)+etherHeaderLen:
			dropped.dropReceived(DropRunt, 1)
			continue
		}
		var hdr gso.VirtioNetHdr
		if err := hdr.Decode(t.hdrIn[:], len(t.hdrIn)); err != nil {
			return n, err // cannot happen: the size is right
		}
		flen := m - len(t.hdrIn)
		switch {
		case flen <= len(buf):
			// A frame (or a superframe small enough) in its pool buffer;
			// forwardOne judges its header.
			*t.io.pool.Hdr(refs[n]) = hdr
			t.io.pool.SetLen(refs[n], flen)
			n++
			continue
		case !hdr.Offloaded():
			// Too long for any port and nothing to cut: forwardOne
			// drops it as oversize, as without offloads.
			t.io.pool.SetLen(refs[n], len(buf))
			n++
			continue
		}
		copy(over, buf)
		t.io.copies++
		if large {
			t.io.pool.Release(refs[n])
			refs[n], t.spare = t.spare, -1
			*t.io.pool.Hdr(refs[n]) = hdr
			t.io.pool.SetLen(refs[n], flen)
			n++
			continue
		}
		if v := gso.Check(t.over[:flen], hdr, t.mtu); v != gso.OK {
			dropped.dropGSO(v, 1)
			continue
		}
		t.pending, t.pendHdr = flen, hdr
		k, wait := t.cut(refs[n:], dropped)
		if wait {
			return n, nil // the next read (buffered) cuts it
		}
		n += k
	}
	return n, nil
}

// cut splits the pending superframe into refs (portIO.cut, the switch's
// one cutting path) and reports how many it filled, or wait when refs are
// too few for it (it stays pending). A superframe that cannot be cut is
// dropped and counted.
func (t *tapTransport) cut(refs []ring.Ref, dropped *tally) (n int, wait bool) {
	frame, hdr := t.over[:t.pending], t.pendHdr
	segs, d, ok := segmentCount(frame, hdr, tapReadBudget)
	switch {
	case !ok:
		t.pending = 0
		dropped.dropReceived(d, 1)
		return 0, false
	case segs > len(refs):
		return 0, true
	}
	t.pending = 0
	k, ok := t.io.cut(frame, hdr, refs[:segs])
	if !ok {
		dropped.dropReceived(DropGSOInvalid, 1)
		return 0, false
	}
	return k, false
}

func (t *tapTransport) write(q txView) writeResult {
	frames := t.bufs[:min(q.Len(), len(t.bufs))]
	for i := range frames {
		frames[i] = t.io.pool.Frame(q.At(i))
	}
	// With offloads every frame goes behind its own header: zero for a
	// plain frame, the superframe's (made by gso.PartialChecksum) for
	// one the kernel is to cut or finish.
	var hdrs [][]byte
	if t.vnet {
		hdrs = t.hdrBufs[:len(frames)]
		for i := range frames {
			t.io.pool.Hdr(q.At(i)).Encode(hdrs[i], tap.VnetHdrSize)
		}
	}
	done, err := tap.WriteVnetFrames(t.fd, hdrs, frames, t.refused)
	t.io.syscalls += uint64(done)
	if done < len(frames) {
		t.io.syscalls++ // the write the device pushed back
	}
	res := writeResult{done: done}
	for i := 0; i < done; i++ {
		if t.refused[i] {
			res.dropped.drop(DropSendError, 1)
		} else {
			res.frames++
			res.bytes += uint64(t.io.pool.Len(q.At(i)))
		}
	}
	if errors.Is(err, unix.EAGAIN) {
		res.blocked = true
		return res
	}
	res.err = err
	return res
}

// close lets go of the spare large buffer; the TAP's owner closes its fd.
func (t *tapTransport) close() {
	if t.spare >= 0 {
		t.io.pool.Release(t.spare)
		t.spare = -1
	}
}
