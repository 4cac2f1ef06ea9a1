//go:build dragonfly || freebsd

package engine

import (
	"github.com/vknetd/vknetd/ring"
	"golang.org/x/sys/unix"
)

// On the BSDs messages move one per syscall: DragonFly has no recvmmsg, and
// one code path for both keeps the port simple. The types keep the Linux
// names so the transports are the same code.

type msgBatch struct{}

func newMsgBatch(int) msgBatch { return msgBatch{} }

func (msgBatch) recv(io *portIO, fd int, hungUp bool, refs []ring.Ref) (int, error) {
	for i, r := range refs {
		buf := io.pool.Buf(r)
		io.syscalls++
		n, _, flags, _, err := unix.Recvmsg(fd, buf, nil, unix.MSG_DONTWAIT)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			return i, nil
		case err != nil:
			return i, err
		case n == 0 && hungUp:
			return i, errPeerClosed
		}
		if flags&unix.MSG_TRUNC != 0 {
			n = len(buf)
		}
		io.pool.SetLen(r, n)
	}
	return len(refs), nil
}

func (msgBatch) send(io *portIO, fd int, q txView) writeResult {
	sent := 0
	for sent < q.Len() && sent < io.batch {
		io.syscalls++
		_, err := unix.Write(fd, io.pool.Frame(q.At(sent)))
		switch {
		case err == nil:
			sent++
			continue
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN && sent > 0:
		case err == unix.EAGAIN:
			return writeResult{blocked: true}
		case err == unix.EMSGSIZE:
			// The frame is larger than the client's socket accepts.
			res := io.sent(q, sent)
			res.done++
			res.dropped.drop(DropSendError, 1)
			return res
		default:
			res := io.sent(q, sent)
			res.err = err
			return res
		}
		break
	}
	return io.sent(q, sent)
}

type namedBatch struct{}

func newNamedBatch(int) namedBatch { return namedBatch{} }

// sendTo sends p's queued frames through fd to the client's path, key.
func (namedBatch) sendTo(io *portIO, q txView, fd int, _ *unix.RawSockaddrUnix, _ int, key string) writeResult {
	to := &unix.SockaddrUnix{Name: key}
	sent := 0
	for sent < q.Len() && sent < io.batch {
		io.syscalls++
		if err := unix.Sendto(fd, io.pool.Frame(q.At(sent)), 0, to); err != nil {
			res := io.sent(q, sent)
			res.err = err
			return res
		}
		sent++
	}
	return io.sent(q, sent)
}

type senderBatch struct{}

func newSenderBatch(int) senderBatch { return senderBatch{} }

// recvFrom reads datagrams and their senders' paths one at a time. (The
// BSD path favours simplicity over the Linux batch: it allocates the
// sender's address per datagram.)
func (senderBatch) recvFrom(io *portIO, fd int, refs []ring.Ref, names []unix.RawSockaddrUnix, nameLens []int, creds []senderCred) (int, error) {
	for i, r := range refs {
		buf := io.pool.Buf(r)
		io.syscalls++
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
		io.pool.SetLen(r, n)
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

func setsockoptForceSndbuf(fd, bytes int) error {
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, bytes)
}
