package handover

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// MaxFdsPerMessage is the most descriptors Linux takes in one SCM_RIGHTS
// message (SCM_MAX_FD in include/net/scm.h); more fail with EINVAL.
const MaxFdsPerMessage = 253

// ChunkBytes is the most payload one message carries, well below a unix
// socket's default buffer, which bounds a SOCK_SEQPACKET message.
const ChunkBytes = 48 << 10

const headerLen = 2

// Message kinds.
const (
	KindHello    byte = 'h' // new to old: started, send the state
	KindSetup    byte = 'u' // old to new: the record without the engine, and the daemon's fds (listeners, TAP)
	KindPrepared byte = 'p' // new to old: built on them, send the rest
	KindState    byte = 's' // old to new: the whole record and the engine's fds (the old loop is frozen)
	KindReady    byte = 'r' // new to old: adopted everything, waiting for commit
	KindError    byte = 'e' // either way: gave up, payload says why
	KindCommit   byte = 'c' // old to new: serve; the old daemon exits
	KindServing  byte = 'v' // new to old: serving (pidfile written, control socket served)

	// A daemon to its supervisor (vknetd --supervise).
	KindPort       byte = 'o' // a client made or closed (engine.PortNotice) with its fds
	KindSnapshot   byte = 'n' // the tables and counters (handover.Engine, no fds)
	KindStopping   byte = 'x' // stopping for good: let go of everything
	KindHandedOver byte = 'a' // upgraded: the new daemon (its pid) speaks from now on
	KindExecutable byte = 'b' // the daemon's own executable (one O_PATH fd): what a crash restarts
)

// Conn is one end of the socketpair.
type Conn struct{ fd int }

// Pair makes a connected socketpair: ours and the end the new process gets.
func Pair() (ours *Conn, theirs int, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, -1, fmt.Errorf("handover socketpair: %w", err)
	}
	return &Conn{fd: fds[0]}, fds[1], nil
}

// NewConn takes fd, an end of a Pair.
func NewConn(fd int) *Conn { return &Conn{fd: fd} }

// Fd is the socket's descriptor.
func (c *Conn) Fd() int { return c.fd }

// Close closes the socket.
func (c *Conn) Close() error {
	if c.fd < 0 {
		return nil
	}
	err := unix.Close(c.fd)
	c.fd = -1
	return err
}

// Send sends one record: payload and fds, cut into messages.
func (c *Conn) Send(kind byte, payload []byte, fds []int) error {
	if len(payload) > MaxRecordBytes || len(fds) > MaxRecordFds {
		return fmt.Errorf("handover: record of %d bytes and %d fds is over the limit", len(payload), len(fds))
	}
	msg := make([]byte, headerLen+ChunkBytes)
	for first := true; first || len(payload) > 0 || len(fds) > 0; first = false {
		n := min(len(payload), ChunkBytes)
		k := min(len(fds), MaxFdsPerMessage)
		more := n < len(payload) || k < len(fds)
		msg[0], msg[1] = kind, 0
		if more {
			msg[1] = 1
		}
		m := headerLen + copy(msg[headerLen:], payload[:n])
		var oob []byte
		if k > 0 {
			oob = unix.UnixRights(fds[:k]...)
		}
		if err := unix.Sendmsg(c.fd, msg[:m], oob, nil, 0); err != nil {
			return fmt.Errorf("handover: send: %w", err)
		}
		payload, fds = payload[n:], fds[k:]
	}
	return nil
}

// ErrTimeout: the peer said nothing within the time given to Recv.
var ErrTimeout = errors.New("handover: timed out")

// Recv receives one record, waiting at most timeout for each message (0:
// for ever). The fds are close-on-exec and the caller's; on an error none
// are left open.
func (c *Conn) Recv(timeout time.Duration) (kind byte, payload []byte, fds []int, err error) {
	defer func() {
		if err != nil {
			closeAll(fds)
			fds = nil
		}
	}()
	buf := make([]byte, headerLen+ChunkBytes+1)
	oob := make([]byte, unix.CmsgSpace(4*MaxFdsPerMessage))
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	for i := 0; ; i++ {
		if err := c.wait(deadline); err != nil {
			return 0, nil, fds, err
		}
		n, oobn, flags, _, err := unix.Recvmsg(c.fd, buf, oob, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, nil, fds, fmt.Errorf("handover: receive: %w", err)
		}
		got, perr := parseRights(oob[:oobn])
		fds = append(fds, got...)
		switch {
		case perr != nil:
			return 0, nil, fds, perr
		case n == 0:
			return 0, nil, fds, errors.New("handover: the peer closed the connection")
		case flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 || n > headerLen+ChunkBytes:
			return 0, nil, fds, errors.New("handover: message or its descriptors truncated")
		case n < headerLen:
			return 0, nil, fds, errors.New("handover: short message")
		case i > 0 && buf[0] != kind:
			return 0, nil, fds, fmt.Errorf("handover: message kind %q in the middle of a %q record", buf[0], kind)
		}
		kind = buf[0]
		payload = append(payload, buf[headerLen:n]...)
		if len(payload) > MaxRecordBytes || len(fds) > MaxRecordFds {
			return 0, nil, fds, fmt.Errorf("handover: record over %d bytes or %d fds", MaxRecordBytes, MaxRecordFds)
		}
		if buf[1] == 0 {
			return kind, payload, fds, nil
		}
	}
}

// wait waits for the socket to be readable until deadline (zero: for ever).
func (c *Conn) wait(deadline time.Time) error {
	for {
		ms := -1
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return ErrTimeout
			}
			ms = int((left + time.Millisecond - 1) / time.Millisecond)
		}
		pfd := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("handover: poll: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
}

func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("handover: control message: %w", err)
	}
	var fds []int
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			closeAll(fds)
			return nil, fmt.Errorf("handover: control message: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// CloseFds closes every fd in fds (what a refused record came with).
func CloseFds(fds []int) { closeAll(fds) }

func closeAll(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}
