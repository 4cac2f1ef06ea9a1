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
		case n == 0 && (p.hangup || p.txClosed):
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

// recvFrom reads datagrams and their senders' paths one at a time. (The
// BSD path favours simplicity over the Linux batch: it allocates the
// sender's address per datagram.)
func (batchIO) recvFrom(e *Engine, fd int, refs []ring.Ref, names []unix.RawSockaddrUnix, nameLens []int, creds []senderCred) (int, error) {
	for i, r := range refs {
		buf := e.pool.Buf(r)
		n, _, flags, from, err := unix.Recvmsg(fd, buf, nil, unix.MSG_DONTWAIT)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			return i, nil
		case err != nil:
			return i, err
		}
		if flags&unix.MSG_TRUNC != 0 {
			n = len(buf)
		}
		e.pool.SetLen(r, n)
		creds[i] = senderCred{-1, -1}
		names[i] = unix.RawSockaddrUnix{}
		nameLens[i] = 2
		if sa, ok := from.(*unix.SockaddrUnix); ok {
			for j := 0; j < len(sa.Name) && j < len(names[i].Path); j++ {
				names[i].Path[j] = int8(sa.Name[j])
			}
			nameLens[i] = 2 + len(sa.Name)
		}
	}
	return len(refs), nil
}

// sendTo sends p's queued frames through fd to the client's path.
func (batchIO) sendTo(e *Engine, p *port, fd int, _ *unix.RawSockaddrUnix, _ int) error {
	to := &unix.SockaddrUnix{Name: p.dgram.key}
	sent := 0
	for sent < p.txq.Len() && sent < e.cfg.Batch {
		if err := unix.Sendto(fd, e.pool.Frame(p.txq.At(sent)), 0, to); err != nil {
			e.sent(p, sent)
			return err
		}
		sent++
	}
	e.sent(p, sent)
	return nil
}
