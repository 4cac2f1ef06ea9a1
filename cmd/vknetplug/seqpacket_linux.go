package main

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/mmsg"
)

// seqLink is the daemon's SEQPACKET socket: one frame per message, moved
// in batches with recvmmsg and sendmmsg.
type seqLink struct {
	fd, ep  int
	path    string
	rb, sb  *mmsg.Batch
	dropped uint64
}

// dialSeqpacket connects to the daemon's -p socket.
func dialSeqpacket(path string) (*seqLink, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, dialErr(path, "-p", err)
	}
	// Connected blocking, so a full backlog waits instead of failing;
	// every call from here on must not block the loop.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s (-p): set non-blocking: %w", path, err)
	}
	return &seqLink{fd: fd, ep: -1, path: path, rb: newMmsgBatch(), sb: newMmsgBatch()}, nil
}

// dialErr says what to do about a failed connect to the daemon.
func dialErr(path, flag string, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("no socket at %s (%s): is vknetd running? start it, or give its socket with %s", path, flag, flag)
	case errors.Is(err, unix.ECONNREFUSED):
		return fmt.Errorf("nobody listens on %s (%s): the daemon that made it is gone; start vknetd", path, flag)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Errorf("connecting to %s (%s): %w; join the daemon's group (its --group, vknet by default) or run as root", path, flag, err)
	case errors.Is(err, unix.EPROTOTYPE):
		other := "--vhost-user"
		if flag == "--vhost-user" {
			other = "-p"
		}
		return fmt.Errorf("%s (%s) is another kind of socket: is it the daemon's %s socket? then give it with %s", path, flag, other, other)
	}
	return fmt.Errorf("connecting to %s (%s): %w", path, flag, err)
}

func newMmsgBatch() *mmsg.Batch { return mmsg.NewBatch(batchSize) }

func (s *seqLink) gone() error {
	return fmt.Errorf("vknetd closed the connection on %s (-p): the daemon stopped, or dropped this client (see its log)", s.path)
}

func (s *seqLink) watch(ep int) error {
	s.ep = ep
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: tokLink}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, s.fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl on %s: %w", s.path, err)
	}
	return nil
}

func (s *seqLink) event(_ int, ev uint32) (in, out bool, err error) {
	if ev&(unix.EPOLLHUP|unix.EPOLLRDHUP|unix.EPOLLERR) != 0 {
		return false, false, s.gone()
	}
	return ev&unix.EPOLLIN != 0, ev&unix.EPOLLOUT != 0, nil
}

func (s *seqLink) interest(in, out bool) error {
	want := uint32(unix.EPOLLRDHUP)
	if in {
		want |= unix.EPOLLIN
	}
	if out {
		want |= unix.EPOLLOUT
	}
	ev := unix.EpollEvent{Events: want, Fd: tokLink}
	if err := unix.EpollCtl(s.ep, unix.EPOLL_CTL_MOD, s.fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl on %s: %w", s.path, err)
	}
	return nil
}

// recv takes a batch; a frame longer than its buffer is dropped, and an
// empty message is the daemon's end of the connection.
// recv never fills hdrs: the SEQPACKET protocol has no header, and the
// loop over it has a TAP without one (hdrs is nil).
func (s *seqLink) recv(bufs [][]byte, sizes []int, _ []gso.VirtioNetHdr) (int, error) {
	for i := range bufs {
		s.rb.Set(i, bufs[i])
	}
	n, err := mmsg.Recv(s.fd, s.rb, len(bufs), unix.MSG_DONTWAIT)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return 0, nil
	case err == unix.ECONNRESET:
		return 0, s.gone()
	case err != nil:
		return 0, fmt.Errorf("receiving from %s (-p): %w", s.path, err)
	}
	got := 0
	for i := 0; i < n; i++ {
		switch {
		case s.rb.Len(i) == 0:
			return 0, s.gone()
		case s.rb.Truncated(i):
			s.dropped++
			continue
		}
		if got != i {
			bufs[got], bufs[i] = bufs[i], bufs[got]
		}
		sizes[got] = s.rb.Len(i)
		got++
	}
	return got, nil
}

// send gives a batch to the daemon. A full socket takes fewer; a frame
// the socket refuses alone (too big) is dropped.
func (s *seqLink) send(frames [][]byte, _ []gso.VirtioNetHdr) (int, error) {
	for i, f := range frames {
		s.sb.Set(i, f)
	}
	n, err := mmsg.Send(s.fd, s.sb, len(frames), unix.MSG_DONTWAIT)
	switch {
	case err == nil:
		return n, nil
	case err == unix.EAGAIN || err == unix.EINTR || err == unix.ENOBUFS:
		return 0, nil
	case err == unix.EPIPE || err == unix.ECONNRESET || err == unix.ENOTCONN:
		return 0, s.gone()
	case err == unix.EMSGSIZE:
		s.dropped++
		return 1, nil
	}
	return 0, fmt.Errorf("sending to %s (-p): %w", s.path, err)
}

func (s *seqLink) idleIn() bool     { return false } // level-triggered: epoll tells
func (s *seqLink) blockedOut() bool { return false } // EPOLLOUT tells
func (s *seqLink) drops() uint64    { return s.dropped }

func (s *seqLink) close() error {
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}
