package engine

import (
	"github.com/vknetd/vknetd/internal/mmsg"
	"github.com/vknetd/vknetd/ring"
	"golang.org/x/sys/unix"
)

// msgBatch moves a batch of messages per syscall with recvmmsg/sendmmsg,
// for the transports whose fd carries one frame per message. Its headers
// point into the pool's slab, which never moves. Each transport has its
// own.
type msgBatch struct{ b *mmsg.Batch }

func newMsgBatch(n int) msgBatch { return msgBatch{mmsg.NewBatch(n)} }

// recv reads up to len(refs) messages from fd; hungUp: the peer has
// closed.
func (m msgBatch) recv(io *portIO, fd int, hungUp bool, refs []ring.Ref) (int, error) {
	n, err := recvBatch(io, fd, m.b, refs)
	if err != nil {
		return 0, err
	}
	for i := 0; i < n; i++ {
		size := receivedLen(io, m.b, i)
		if size == 0 && hungUp {
			// An empty read after the peer hung up is end of stream, not
			// an empty frame.
			return i, errPeerClosed
		}
		io.pool.SetLen(refs[i], size)
	}
	return n, nil
}

// recvBatch receives up to len(refs) messages from fd into refs' buffers
// through b, whose names (if any) the caller has set. EAGAIN and EINTR
// are no messages, not errors.
func recvBatch(io *portIO, fd int, b *mmsg.Batch, refs []ring.Ref) (int, error) {
	for i, r := range refs {
		b.Set(i, io.pool.Buf(r))
	}
	// MSG_CMSG_CLOEXEC: should a passed fd ever be installed, no child inherits it.
	io.syscalls++
	n, err := mmsg.Recv(fd, b, len(refs), unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return 0, nil
	case err != nil:
		return 0, err
	}
	return n, nil
}

// receivedLen is the length to record for message i of b: a message cut
// to fit its buffer counts as the whole buffer, more than maxFrame, so it
// is dropped as oversize rather than forwarded cut.
func receivedLen(io *portIO, b *mmsg.Batch, i int) int {
	if b.Truncated(i) {
		return io.pool.Size()
	}
	return b.Len(i)
}

// send sends a batch from the head of q on fd. Errors other than
// back-pressure come back as they are, for the transport to judge.
func (m msgBatch) send(io *portIO, fd int, q txView) writeResult {
	count := min(q.Len(), m.b.Cap())
	for i := 0; i < count; i++ {
		m.b.Set(i, io.pool.Frame(q.At(i)))
	}
	io.syscalls++
	n, err := mmsg.Send(fd, m.b, count, unix.MSG_DONTWAIT)
	switch {
	case err == unix.EAGAIN:
		return writeResult{blocked: true}
	case err == unix.EINTR:
		return writeResult{}
	case err == unix.EMSGSIZE:
		// The head frame is larger than the client's socket accepts.
		return skipHead()
	case err != nil:
		return writeResult{err: err}
	}
	return io.sent(q, n)
}

// namedBatch sends a batch through a socket not connected to the peer,
// each message addressed to it: a datagram client answered through its
// listener. (Sends never carry control data: a stale SCM_CREDENTIALS sent
// by root would be believed.)
type namedBatch struct{ b *mmsg.Batch }

func newNamedBatch(n int) namedBatch { return namedBatch{mmsg.NewBatch(n)} }

// sendTo sends q's frames through fd, each addressed to addr. Errors
// come back as they are, for the transport to judge.
func (m namedBatch) sendTo(io *portIO, q txView, fd int, addr *unix.RawSockaddrUnix, addrLen int, _ string) writeResult {
	count := min(q.Len(), m.b.Cap())
	for i := 0; i < count; i++ {
		m.b.Set(i, io.pool.Frame(q.At(i)))
		m.b.SetName(i, addr)
		m.b.SetNameLen(i, addrLen)
	}
	io.syscalls++
	n, err := mmsg.Send(fd, m.b, count, unix.MSG_DONTWAIT)
	if err != nil {
		return writeResult{err: err}
	}
	return io.sent(q, n)
}

// senderBatch reads datagrams from a listener with each sender's address
// and credentials (the listener has SO_PASSCRED).
type senderBatch struct{ b *mmsg.Batch }

func newSenderBatch(n int) senderBatch { return senderBatch{mmsg.NewBatch(n).WithCredentials()} }

// recvFrom reads datagrams with their senders' addresses and credentials
// (without credentials a sender is unknown, -1).
func (m senderBatch) recvFrom(io *portIO, fd int, refs []ring.Ref, names []unix.RawSockaddrUnix, nameLens []int, creds []senderCred) (int, error) {
	for i := range refs {
		m.b.SetName(i, &names[i])
	}
	n, err := recvBatch(io, fd, m.b, refs)
	if err != nil {
		return 0, err
	}
	for i := 0; i < n; i++ {
		io.pool.SetLen(refs[i], receivedLen(io, m.b, i))
		nameLens[i] = m.b.NameLen(i)
		creds[i] = senderCred{-1, -1}
		if pid, uid, ok := m.b.Credentials(i); ok {
			creds[i] = senderCred{pid, int32(uid)}
		}
	}
	return n, nil
}

func setsockoptForceSndbuf(fd, bytes int) error {
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, bytes)
}

// peerCred reports the connecting process (SO_PEERCRED), -1 when unknown.
func peerCred(fd int) (pid, uid int32) {
	c, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return -1, -1
	}
	return c.Pid, int32(c.Uid)
}
