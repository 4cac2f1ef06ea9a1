package engine

import (
	"errors"

	"github.com/vknetd/vknetd/ring"
	"golang.org/x/sys/unix"
)

var (
	// errWouldBlock: the kernel pushed back; wait for write readiness.
	errWouldBlock = errors.New("would block")
	// errRetryLater: pushed back where the poller cannot tell us when to
	// retry (datagrams through a listener); a timer will.
	errRetryLater = errors.New("retry later")
	// errPeerClosed: the client hung up.
	errPeerClosed = errors.New("peer closed")
)

// readBatch reads up to len(refs) frames from p into the given buffers and
// records their lengths. It returns how many buffers hold frames; a frame
// longer than the buffer is recorded with the buffer's full size, which is
// more than maxFrame, so forwardOne drops it as oversize. err is non-nil
// only when the port must be closed.
func (e *Engine) readBatch(p *port, refs []ring.Ref) (int, error) {
	n, err := e.readPort(p, refs)
	if n == 0 && errors.Is(err, unix.ECONNRESET) {
		// A SEQPACKET peer that closed with our frames unread leaves
		// ECONNRESET on our socket, reported (once) before the messages
		// it sent earlier: the client hung up, and those are still ours.
		p.hangup = true
		n, err = e.readPort(p, refs)
	}
	return n, err
}

func (e *Engine) readPort(p *port, refs []ring.Ref) (int, error) {
	switch p.kind {
	case kindTap:
		return e.readEach(p, refs)
	case kindStream:
		return e.readStream(p, refs)
	case kindMonitor:
		// A monitor only listens; whatever it sends is read and dropped
		// so its socket never fills.
		n, err := e.io.recv(e, p, refs)
		if n > 0 {
			p.cnt.drops[DropMonitorInput] += uint64(n)
		}
		return 0, err
	}
	return e.io.recv(e, p, refs)
}

// writeBatch sends frames from the head of p's queue, releasing what was
// sent. It returns errWouldBlock when the kernel took nothing more.
func (e *Engine) writeBatch(p *port) error {
	switch {
	case p.kind == kindTap:
		return e.writeEach(p)
	case p.kind == kindStream:
		return e.writeStream(p)
	case p.kind == kindDgram && p.dgram.via != nil:
		return e.writeDgramVia(p)
	}
	err := e.io.send(e, p)
	if err == unix.EPERM && p.kind == kindDgram {
		// The client connected its socket to the listener and takes
		// datagrams only from there.
		if err := e.routeViaListener(p); err != nil {
			return err
		}
		return e.writeDgramVia(p)
	}
	return err
}

// readEach drains a fd with one read per frame: a TAP has no recvmmsg
// (ENOTSOCK), so batching means reading until EAGAIN.
func (e *Engine) readEach(p *port, refs []ring.Ref) (int, error) {
	for i, r := range refs {
		n, err := unix.Read(p.fd, e.pool.Buf(r))
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			return i, nil
		case err != nil:
			return i, err
		}
		e.pool.SetLen(r, n)
	}
	return len(refs), nil
}

// writeEach writes queued frames one write each: a TAP takes one frame
// per write, and writev would glue frames together.
func (e *Engine) writeEach(p *port) error {
	sent := 0
	defer func() { p.txq.Drop(sent) }()
	for sent < p.txq.Len() && sent < e.cfg.Batch {
		r := p.txq.At(sent)
		frame := e.pool.Frame(r)
		_, err := unix.Write(p.fd, frame)
		switch {
		case err == nil:
			p.cnt.txFrames++
			p.cnt.txBytes += uint64(len(frame))
		case err == unix.EAGAIN:
			if sent == 0 {
				return errWouldBlock
			}
			return nil
		case err == unix.EINTR:
			continue
		case isFatalWriteErr(err):
			return err
		default:
			// EIO from a TAP that is down, EMSGSIZE, EINVAL: this frame
			// cannot go, the next may.
			p.cnt.drops[DropSendError]++
		}
		e.pool.Release(r)
		sent++
	}
	return nil
}

// isFatalWriteErr: errors after which a client connection is gone.
func isFatalWriteErr(err error) bool {
	return err == unix.EPIPE || err == unix.ECONNRESET || err == unix.ENOTCONN || err == unix.EBADF
}

func closeFd(fd int) { unix.Close(fd) }

func setSndbuf(fd, bytes int) {
	// SO_SNDBUFFORCE lets root go past net.core.wmem_max; fall back quietly
	// for an unprivileged daemon.
	if err := setsockoptForceSndbuf(fd, bytes); err != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, bytes)
	}
}
