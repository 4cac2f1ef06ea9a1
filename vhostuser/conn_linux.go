package vhostuser

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// conn reads front-end messages from the non-blocking unix stream socket,
// with the fds that come with them, and writes replies.
//
// A message split across reads is handled: what arrived stays in buf and
// the next call resumes, so a front-end that writes a message in pieces
// (QEMU and DPDK write each in one sendmsg) costs a wake-up, never a
// wedge. Reads stop at the end of the current message, so the fds the
// kernel hands over always belong to it.
type conn struct {
	fd     int
	buf    [headerSize + maxPayload]byte
	have   int    // bytes of the current message in buf
	hdr    header // valid once have >= headerSize
	fds    [maxMessageFDs]int
	nfds   int
	oob    []byte
	out    []byte
	closed bool
}

func newConn(fd int) *conn {
	return &conn{fd: fd, oob: make([]byte, unix.CmsgSpace(4*maxMessageFDs)), out: make([]byte, 0, headerSize+64)}
}

// read reads until a whole message is buffered (true) or the socket has
// nothing more for now (false, nil).
func (c *conn) read() (bool, error) {
	for {
		want := headerSize
		if c.have >= headerSize {
			want += int(c.hdr.size)
			if c.have == want {
				return true, nil
			}
		}
		n, oobn, flags, _, err := unix.Recvmsg(c.fd, c.buf[c.have:want], c.oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false, nil
		case err != nil:
			return false, fmt.Errorf("vhost-user: reading the socket: %w", err)
		}
		if oobn > 0 {
			if err := c.takeFDs(c.oob[:oobn]); err != nil {
				return false, err
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			// The kernel closed the fds that did not fit: the message is
			// unusable whatever it was.
			return false, violation("message came with more than %d fds", maxMessageFDs)
		}
		if n == 0 {
			if c.have > 0 {
				return false, fmt.Errorf("%w in the middle of a message (%d bytes of it read)", ErrHangup, c.have)
			}
			return false, ErrHangup
		}
		c.have += n
		if c.have == headerSize {
			if c.hdr, err = parseHeader(c.buf[:headerSize]); err != nil {
				return false, err
			}
		}
	}
}

// takeFDs keeps the fds of a control message for the current message,
// closing them all if there are more than a message may carry.
func (c *conn) takeFDs(oob []byte) error {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return violation("unreadable control message: %v", err)
	}
	var tooMany bool
	for i := range msgs {
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue // not SCM_RIGHTS: nothing to close
		}
		for _, fd := range fds {
			if c.nfds == len(c.fds) {
				unix.Close(fd)
				tooMany = true
				continue
			}
			c.fds[c.nfds] = fd
			c.nfds++
		}
	}
	if tooMany {
		return violation("message came with more than %d fds", maxMessageFDs)
	}
	return nil
}

// payload is the current message's payload.
func (c *conn) payload() []byte { return c.buf[headerSize:c.have] }

// take hands fd i of the current message to the caller, who now owns it.
func (c *conn) take(i int) int {
	fd := c.fds[i]
	c.fds[i] = -1
	return fd
}

// done forgets the current message, closing every fd nobody took.
func (c *conn) done() {
	for i := 0; i < c.nfds; i++ {
		if c.fds[i] >= 0 {
			unix.Close(c.fds[i])
		}
	}
	c.nfds = 0
	c.have = 0
}

// reply sends a reply to h. Replies are small and the front-end waits for
// them, so a socket too full to take one is the front-end's failure.
func (c *conn) reply(h header, p []byte) error {
	c.out = appendReply(c.out[:0], h, p)
	n, err := unix.Write(c.fd, c.out)
	if errors.Is(err, unix.EAGAIN) || (err == nil && n < len(c.out)) {
		return violation("%v: front-end is not reading replies (socket full)", h.req)
	}
	if err != nil {
		return fmt.Errorf("vhost-user: replying to %v: %w", h.req, err)
	}
	return nil
}

func (c *conn) close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	c.done()
	return unix.Close(c.fd)
}
