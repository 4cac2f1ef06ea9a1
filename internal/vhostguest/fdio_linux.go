package vhostguest

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
)

// Frames between the rings and a file descriptor that hands over one
// frame behind its virtio_net_hdr per readv and takes one per writev (a
// TAP with IFF_VNET_HDR): the kernel copies straight to and from the
// guest's buffers, so a superframe is not copied once more through a
// buffer of the caller's.

// txChainBufs is how many TX buffers SendFromFD reads one frame into: the
// longest frame and its header, and one byte more so that a longer frame
// shows as one and is dropped rather than cut.
const txChainBufs = (gso.HdrSizeMrgRxbuf + gso.MaxFrameLen + 1 + txBufSize - 1) / txBufSize

// Moved is what SendFromFD or ReceiveToFD did: frames and their bytes
// (headers not counted) moved, frames dropped, and why it stopped short
// of the limit it was given, if it did.
type Moved struct {
	Frames, Bytes int
	// Dropped: SendFromFD read frames longer than gso.MaxFrameLen;
	// ReceiveToFD had frames the fd refused one by one (a TAP that is down
	// says EIO, a header it cannot take EINVAL), or that the device laid
	// out wrong.
	Dropped int
	// SourceDry: the source had no frame left (the fd said EAGAIN, the
	// RX ring had no complete frame).
	SourceDry bool
	// SinkFull: the destination had no room (no free chain for the
	// longest frame on the TX ring, the fd said EAGAIN): TXRoom, or the
	// fd's writability, says when there is.
	SinkFull bool
}

// checkFDHdr says whether the fd's virtio_net_hdr of fdHdr bytes fits in
// the guest's: its first bytes are the same header.
func (g *Guest) checkFDHdr(fdHdr int) error {
	if (fdHdr != gso.HdrSize && fdHdr != gso.HdrSizeMrgRxbuf) || fdHdr > g.hdrLen {
		return fmt.Errorf("vhostguest: an fd's virtio_net_hdr of %d bytes does not fit the guest's of %d", fdHdr, g.hdrLen)
	}
	return nil
}

// SendFromFD reads up to limit frames from the non-blocking fd, each behind
// its virtio_net_hdr of fdHdr bytes (10, or 12 if the guest's header is
// 12 too), straight into chains of TX buffers, and publishes them with
// one kick decision, as Send does. The header lands in the guest's header,
// num_buffers (meaningless on TX) zero. Each read gets a chain long enough
// for gso.MaxFrameLen; the chain keeps only the buffers the frame fills,
// the others stay free. It stops at EAGAIN (SourceDry) or when no such
// chain is free after reclaiming (SinkFull); an error other than EAGAIN
// or EINTR from the read is returned after publishing what was read.
// Frames with no byte behind the header are skipped.
func (g *Guest) SendFromFD(fd, fdHdr, limit int) (Moved, error) {
	var m Moved
	if err := g.checkFDHdr(fdHdr); err != nil {
		return m, err
	}
	r := &g.q[2*g.pair+1]
	g.reclaimTX()
	r.want = 1
	old := r.availIdx
	var err error
	for m.Frames < limit {
		if len(r.free) < txChainBufs {
			g.reclaimTX()
			if len(r.free) < txChainBufs {
				r.want = txChainBufs
				m.SinkFull = true
				break
			}
		}
		// The chain is the top of the free stack, in the order Send pops it.
		top := len(r.free) - 1
		iov := g.iov[:0]
		for c := 0; c < txChainBufs; c++ {
			off := r.buf + int(r.free[top-c])*r.bufSize
			room := g.mem[off : off+r.bufSize]
			if c == 0 {
				iov = append(iov, unix.Iovec{})
				setIov(&iov[len(iov)-1], room[:fdHdr])
				room = room[g.hdrLen:]
			}
			iov = append(iov, unix.Iovec{})
			setIov(&iov[len(iov)-1], room)
		}
		n, errno := readv(fd, iov)
		if errno == unix.EINTR {
			continue
		}
		if errno == unix.EAGAIN {
			m.SourceDry = true
			break
		}
		if errno != 0 {
			err = fmt.Errorf("readv: %w", errno)
			break
		}
		size := n - fdHdr
		if size <= 0 {
			continue
		}
		if size > gso.MaxFrameLen {
			m.Dropped++
			continue
		}
		head := r.free[top]
		off := r.buf + int(head)*r.bufSize
		clear(g.mem[off+gso.HdrSize : off+g.hdrLen]) // num_buffers, whatever the fd left there
		left := g.hdrLen + size
		for c := 0; left > 0; c++ {
			i := r.free[top-c]
			k := min(left, r.bufSize)
			left -= k
			flags, next := uint16(0), uint16(0)
			if left > 0 {
				flags, next = descNext, r.free[top-c-1]
			}
			g.setDesc(r, i, GuestAddr(r.buf+int(i)*r.bufSize), uint32(k), flags, next)
			r.free = r.free[:top-c]
		}
		binary.LittleEndian.PutUint16(g.mem[r.avail+4+2*int(r.availIdx&uint16(r.num-1)):], head)
		r.availIdx++
		m.Frames++
		m.Bytes += size
	}
	if !g.opts.QuietTX {
		g.askCall(r)
	}
	g.publish(2*g.pair+1, old)
	return m, err
}

// ReceiveToFD writes up to limit frames the device put in the RX ring to the
// non-blocking fd, one writev each straight from the buffers the frame
// spans: the first fdHdr bytes of the guest's header (10, or 12 if the
// guest's is 12 too), then the frame. Only a frame the fd took (or
// refused for good: Dropped) gives its buffers back, and all of them are
// posted again at the end; at EAGAIN the frame stays where it is, for the
// next call (SinkFull). An error other than EAGAIN, EINTR or a refusal of
// the frame alone (the fd is unusable) is returned.
func (g *Guest) ReceiveToFD(fd, fdHdr, limit int) (Moved, error) {
	var m Moved
	if err := g.checkFDHdr(fdHdr); err != nil {
		return m, err
	}
	r := &g.q[2*g.pair]
	var err error
	for m.Frames+m.Dropped < limit {
		idx := g.usedIdx(r)
		id, n0 := g.usedEntry(r, r.lastUsed)
		nb := 1
		if idx != r.lastUsed && int(id) < r.num && g.hdrLen == gso.HdrSizeMrgRxbuf {
			nb = int(binary.LittleEndian.Uint16(g.mem[r.buf+int(id)*r.bufSize+10:]))
		}
		if idx == r.lastUsed || nb < 1 || int(idx-r.lastUsed) < nb {
			m.SourceDry = true // nothing, or the rest of the frame is not published yet
			break
		}
		iov, size, ok := g.rxIov(r, nb, fdHdr, int(n0))
		if ok {
			_, errno := writev(fd, iov)
			switch errno {
			case 0:
				m.Frames++
				m.Bytes += size
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				m.SinkFull = true
			case unix.EBADF, unix.EFAULT, unix.ENOTCONN, unix.EPIPE:
				err = fmt.Errorf("writev: %w", errno)
			default:
				m.Dropped++
			}
			if m.SinkFull || err != nil {
				break
			}
		} else {
			m.Dropped++
		}
		for k := 0; k < nb; k++ {
			id, _ := g.usedEntry(r, r.lastUsed)
			r.free = append(r.free, id)
			r.lastUsed++
		}
	}
	g.askCall(r)
	if len(r.free) > 0 {
		g.PostRX(len(r.free))
	}
	return m, err
}

// rxIov lays the frame of nb used RX entries from lastUsed out in g.iov
// for writev: the fd's header, the data after the guest's header, the
// data of the other buffers. ok is false for a frame the device laid out
// wrong (more buffers than the ring has, lengths out of their buffers).
func (g *Guest) rxIov(r *ring, nb, fdHdr, n0 int) (iov []unix.Iovec, size int, ok bool) {
	if nb > r.num || n0 < g.hdrLen {
		return nil, 0, false
	}
	iov = g.iov[:0]
	for k := 0; k < nb; k++ {
		id, n := g.usedEntry(r, r.lastUsed+uint16(k))
		if int(id) >= r.num || int(n) > r.bufSize {
			return nil, 0, false
		}
		b := g.mem[r.buf+int(id)*r.bufSize:][:n]
		if k == 0 {
			iov = append(iov, unix.Iovec{})
			setIov(&iov[0], b[:fdHdr])
			b = b[g.hdrLen:]
		}
		if len(b) > 0 {
			iov = append(iov, unix.Iovec{})
			setIov(&iov[len(iov)-1], b)
			size += len(b)
		}
	}
	return iov, size, true
}
