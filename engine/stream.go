package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/ring"
)

// QEMU's -netdev stream framing: each frame is preceded by its length as
// a 4-byte big-endian integer. No header, no FCS.
const streamPrefix = 4

// streamReadChunk is how much one read may take beyond a maximal frame, so
// a burst of small frames arrives in one syscall.
const streamReadChunk = 64 << 10

// errStreamLength: the client sent a length of zero or beyond the MTU's
// frame size; its stream cannot be resynchronised, so it is closed.
type errStreamLength struct{ length uint32 }

func (e errStreamLength) Error() string {
	return fmt.Sprintf("stream client sent a frame length of %d: closing it (the stream cannot be resynchronised)", e.length)
}

var errClosedMidFrame = errors.New("stream client closed in the middle of a frame")

// streamTransport is QEMU's -netdev stream (and socket_vmnet, passt): it
// reassembles length-prefixed frames from the byte stream, and remembers
// how much of the head frame a short write left unsent.
type streamTransport struct {
	polledByEngine
	io       *portIO
	fd       int
	maxFrame int
	buf      []byte
	start    int  // unread bytes are buf[start:end]
	end      int  //
	pending  bool // complete frames may be waiting in buf: read again without polling
	txOff    int  // bytes of the head frame (length prefix included) already written

	iov      []unix.Iovec // writev: prefix and frame per message
	prefixes [][streamPrefix]byte
}

func newStreamTransport(io *portIO, fd, maxFrame int) *streamTransport {
	return &streamTransport{io: io, fd: fd, maxFrame: maxFrame, buf: make([]byte, streamPrefix+maxFrame+streamReadChunk),
		iov: make([]unix.Iovec, 0, 2*io.batch), prefixes: make([][streamPrefix]byte, io.batch)}
}

func (*streamTransport) caps() transportCaps { return transportCaps{kind: "stream"} }

func (s *streamTransport) close() { closeFd(s.fd) }

// read cuts complete frames out of the port's byte stream into refs,
// reading more only when the buffer holds no complete frame.
func (s *streamTransport) read(refs []ring.Ref, _ bool) readResult {
	var res readResult
	res.n, res.err = s.readFrames(refs, &res.dropped)
	res.buffered = s.pending
	return res
}

func (s *streamTransport) readFrames(refs []ring.Ref, dropped *tally) (int, error) {
	pool := s.io.pool
	n := 0
	for n < len(refs) {
		if s.end-s.start >= streamPrefix {
			length := binary.BigEndian.Uint32(s.buf[s.start:])
			if length == 0 || int(length) > s.maxFrame {
				dropped.drop(DropBadLength, 1)
				return n, errStreamLength{length}
			}
			if total := streamPrefix + int(length); s.end-s.start >= total {
				copy(pool.Buf(refs[n]), s.buf[s.start+streamPrefix:s.start+total])
				s.io.copies++
				pool.SetLen(refs[n], int(length))
				s.start += total
				n++
				continue
			}
		}
		// No complete frame left: keep the partial one at the front and read.
		if s.start > 0 {
			s.end = copy(s.buf, s.buf[s.start:s.end])
			s.start = 0
		}
		s.io.syscalls++
		m, err := unix.Read(s.fd, s.buf[s.end:])
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			s.pending = false
			return n, nil
		case err != nil:
			return n, err
		case m == 0:
			if s.end > 0 {
				return n, errClosedMidFrame
			}
			return n, errPeerClosed
		}
		s.end += m
	}
	// refs ran out first: more frames may sit in the buffer with nothing
	// left in the kernel to make the poller report the fd again.
	s.pending = true
	return n, nil
}

// write writes the queue's head frames with their length prefixes in one
// writev, resuming a frame a short write cut.
func (s *streamTransport) write(q txView) writeResult {
	pool := s.io.pool
	count := min(q.Len(), len(s.prefixes))
	iov := s.iov[:0]
	for i := 0; i < count; i++ {
		frame := pool.Frame(q.At(i))
		hdr := s.prefixes[i][:]
		binary.BigEndian.PutUint32(hdr, uint32(len(frame)))
		if i == 0 && s.txOff > 0 {
			if s.txOff < streamPrefix {
				iov = appendIov(iov, hdr[s.txOff:])
				iov = appendIov(iov, frame)
			} else {
				iov = appendIov(iov, frame[s.txOff-streamPrefix:])
			}
			continue
		}
		iov = appendIov(iov, hdr)
		iov = appendIov(iov, frame)
	}
	s.io.syscalls++
	written, err := writev(s.fd, iov)
	switch {
	case err == unix.EAGAIN:
		return writeResult{blocked: true}
	case err == unix.EINTR:
		return writeResult{}
	case err != nil:
		return writeResult{err: err}
	}
	// Retire every frame the write covered; a cut frame stays at the head.
	var res writeResult
	for written > 0 {
		flen := pool.Len(q.At(res.done))
		left := streamPrefix + flen - s.txOff
		if written < left {
			s.txOff += written
			res.blocked = true // the socket is full: wait for writability
			return res
		}
		written -= left
		s.txOff = 0
		res.done++
		res.frames++
		res.bytes += uint64(flen)
	}
	return res
}

func appendIov(iov []unix.Iovec, b []byte) []unix.Iovec {
	v := unix.Iovec{Base: &b[0]}
	v.SetLen(len(b))
	return append(iov, v)
}

// writev without x/sys's per-call iovec slice: the engine's array is reused.
func writev(fd int, iov []unix.Iovec) (int, error) {
	n, _, errno := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
