package engine

import (
	"github.com/vknetd/vknetd/internal/mmsg"
	"github.com/vknetd/vknetd/ring"
	"golang.org/x/sys/unix"
)

// batchIO moves a batch of messages per syscall with recvmmsg/sendmmsg.
// Its headers point into the pool's slab, which never moves. named is a
// second set whose messages carry socket addresses, for sending through a
// dgram listener; creds reads from dgram listeners, with each sender's
// address and credentials. (Sends never carry control data: a stale
// SCM_CREDENTIALS sent by root would be believed.)
type batchIO struct {
	b     *mmsg.Batch
	named *mmsg.Batch
	creds *mmsg.Batch
}

func newBatchIO(batch int) batchIO {
	return batchIO{b: mmsg.NewBatch(batch), named: mmsg.NewBatch(batch), creds: mmsg.NewBatch(batch).WithCredentials()}
}

func (io batchIO) recv(e *Engine, p *port, refs []ring.Ref) (int, error) {
	n, err := recvBatch(e, p.fd, io.b, refs)
	if err != nil {
		return 0, err
	}
	for i := 0; i < n; i++ {
		size := receivedLen(e, io.b, i)
		if size == 0 && (p.hangup || p.txClosed) {
			// An empty read after the peer hung up is end of stream, not
			// an empty frame.
			return i, errPeerClosed
		}
		e.pool.SetLen(refs[i], size)
	}
	return n, nil
}

// recvBatch receives up to len(refs) messages from fd into refs' buffers
// through b, whose names (if any) the caller has set. EAGAIN and EINTR
// are no messages, not errors.
func recvBatch(e *Engine, fd int, b *mmsg.Batch, refs []ring.Ref) (int, error) {
	for i, r := range refs {
		b.Set(i, e.pool.Buf(r))
	}
	// MSG_CMSG_CLOEXEC: should a passed fd ever be installed, no child inherits it.
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
func receivedLen(e *Engine, b *mmsg.Batch, i int) int {
	if b.Truncated(i) {
		return e.pool.Size()
	}
	return b.Len(i)
}

func (io batchIO) send(e *Engine, p *port) error {
	count := p.txq.Len()
	if count > io.b.Cap() {
		count = io.b.Cap()
	}
	for i := 0; i < count; i++ {
		io.b.Set(i, e.pool.Frame(p.txq.At(i)))
	}
	n, err := mmsg.Send(p.fd, io.b, count, unix.MSG_DONTWAIT)
	switch {
	case err == unix.EAGAIN:
		return errWouldBlock
	case err == unix.EINTR:
		return nil
	case err == unix.EMSGSIZE:
		// The head frame is larger than the client's socket accepts; skip
		// it rather than retrying it forever.
		e.pool.Release(p.txq.At(0))
		p.txq.Drop(1)
		p.cnt.drops[DropSendError]++
		return nil
	case err != nil:
		return err
	}
	e.sent(p, n)
	return nil
}

// recvFrom reads datagrams with their senders' addresses and credentials
// (the listener has SO_PASSCRED; without credentials a sender is unknown, -1).
func (io batchIO) recvFrom(e *Engine, fd int, refs []ring.Ref, names []unix.RawSockaddrUnix, nameLens []int, creds []senderCred) (int, error) {
	for i := range refs {
		io.creds.SetName(i, &names[i])
	}
	n, err := recvBatch(e, fd, io.creds, refs)
	if err != nil {
		return 0, err
	}
	for i := 0; i < n; i++ {
		e.pool.SetLen(refs[i], receivedLen(e, io.creds, i))
		nameLens[i] = io.creds.NameLen(i)
		creds[i] = senderCred{-1, -1}
		if pid, uid, ok := io.creds.Credentials(i); ok {
			creds[i] = senderCred{pid, int32(uid)}
		}
	}
	return n, nil
}

// sendTo sends p's queued frames through fd, each addressed to addr.
func (io batchIO) sendTo(e *Engine, p *port, fd int, addr *unix.RawSockaddrUnix, addrLen int) error {
	count := min(p.txq.Len(), io.named.Cap())
	for i := 0; i < count; i++ {
		io.named.Set(i, e.pool.Frame(p.txq.At(i)))
		io.named.SetName(i, addr)
		io.named.SetNameLen(i, addrLen)
	}
	n, err := mmsg.Send(fd, io.named, count, unix.MSG_DONTWAIT)
	if err != nil {
		return err
	}
	e.sent(p, n)
	return nil
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
