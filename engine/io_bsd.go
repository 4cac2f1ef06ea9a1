//go:build dragonfly || freebsd

package engine

import (
	"github.com/vknetd/vknetd/ring"
	"golang.org/x/sys/unix"
)

// batchIO on the BSDs reads and writes one message per syscall: DragonFly
// has no recvmmsg, and one code path for both keeps the port simple.
type batchIO struct{}

func newBatchIO(int) batchIO { return batchIO{} }

func (batchIO) recv(e *Engine, p *port, refs []ring.Ref) (int, error) {
	for i, r := range refs {
		buf := e.pool.Buf(r)
		n, _, flags, _, err := unix.Recvmsg(p.fd, buf, nil, unix.MSG_DONTWAIT)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			return i, nil
		case err != nil:
			return i, err
		case n == 0 && p.hangup:
			return i, errPeerClosed
		}
		if flags&unix.MSG_TRUNC != 0 {
			n = len(buf)
		}
		e.pool.SetLen(r, n)
	}
	return len(refs), nil
}

func (batchIO) send(e *Engine, p *port) error {
	return e.writeEach(p)
}

func setsockoptForceSndbuf(fd, bytes int) error {
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, bytes)
}
