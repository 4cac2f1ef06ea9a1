package main

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/vhostguest"
)

// vhostLink is a vhost-user connection to the daemon's --vhost-user
// socket, the plug playing the guest: its memory is a memfd the daemon
// maps, frames go on split virtqueues in it. It never polls: it asks the
// switch for calls (used_event) before it sleeps and waits for them on the
// call eventfds, as a virtio-net driver waits for interrupts.
type vhostLink struct {
	g       *vhostguest.Guest
	path    string
	maxTX   int // the longest frame a TX descriptor holds
	scratch [8]byte
	dropped uint64
}

// The vhost-user link's tokens: the two call eventfds and the socket.
const (
	tokCallRX = tokLink + iota
	tokCallTX
	tokVhostSock
)

const (
	vhostQueueSize = 256   // entries per ring, as QEMU's default
	vhostTXBuf     = 16384 // vhostguest's TX buffer per descriptor
)

// maxVhostMTU is the largest --mtu a frame of which fits one TX buffer
// with its virtio-net header (12 bytes) and a VLAN tag.
const maxVhostMTU = vhostTXBuf - 12 - 18

// dialVhost connects to the daemon's vhost-user socket and negotiates the
// device as QEMU would, then posts every receive buffer.
func dialVhost(path string) (*vhostLink, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, dialErr(path, "--vhost-user", err)
	}
	return newVhostLink(fd, path)
}

// newVhostLink plays the guest on the connected socket fd, which it owns
// from here on.
func newVhostLink(fd int, path string) (*vhostLink, error) {
	g, err := vhostguest.New(vhostguest.Options{QueueSize: vhostQueueSize, QuietTX: true})
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	g.Attach(fd)
	if err := g.Start(); err != nil {
		g.Close()
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE) {
			return nil, fmt.Errorf("vknetd closed the vhost-user connection on %s (--vhost-user) while setting up the device: it refused this guest (see its log: too many clients?)", path)
		}
		return nil, fmt.Errorf("setting up the vhost-user device on %s (--vhost-user): %w", path, err)
	}
	g.PostRX(vhostQueueSize)
	return &vhostLink{g: g, path: path, maxTX: vhostTXBuf - g.HeaderLen()}, nil
}

func (v *vhostLink) gone() error {
	return fmt.Errorf("vknetd closed the vhost-user connection on %s (--vhost-user): the daemon stopped, or dropped this guest (see its log)", v.path)
}

func (v *vhostLink) watch(ep int) error {
	for _, a := range []struct {
		fd, tok int
		ev      uint32
	}{
		{v.g.CallFD(0), tokCallRX, unix.EPOLLIN},
		{v.g.CallFD(1), tokCallTX, unix.EPOLLIN},
		{v.g.SocketFD(), tokVhostSock, unix.EPOLLIN | unix.EPOLLRDHUP},
	} {
		ev := unix.EpollEvent{Events: a.ev, Fd: int32(a.tok)}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, a.fd, &ev); err != nil {
			return fmt.Errorf("epoll_ctl on %s: %w", v.path, err)
		}
	}
	return nil
}

// event drains a call eventfd; the socket says anything only when the
// daemon hangs up (the back-end sends no requests on it).
func (v *vhostLink) event(tok int, _ uint32) (in, out bool, err error) {
	switch tok {
	case tokCallRX:
		unix.Read(v.g.CallFD(0), v.scratch[:])
		return true, false, nil
	case tokCallTX:
		unix.Read(v.g.CallFD(1), v.scratch[:])
		return false, true, nil
	}
	return false, false, v.gone()
}

func (v *vhostLink) recv(bufs [][]byte, sizes []int) (int, error) {
	n := v.g.Receive(bufs, sizes, nil)
	if n > 0 {
		v.g.PostRX(vhostQueueSize) // every buffer Receive freed
	}
	return n, nil
}

// send puts frames on the TX ring; a frame no TX buffer holds is dropped.
func (v *vhostLink) send(frames [][]byte) (int, error) {
	for i, f := range frames {
		if len(f) > v.maxTX {
			n := v.g.Send(frames[:i], nil)
			if n < i {
				return n, nil
			}
			v.dropped++
			return i + 1, nil
		}
	}
	return v.g.Send(frames, nil), nil
}

func (v *vhostLink) idleIn() bool             { return v.g.RXReady() }
func (v *vhostLink) blockedOut() bool         { return v.g.TXRoom() }
func (v *vhostLink) interest(_, _ bool) error { return nil } // eventfds are drained on each call
func (v *vhostLink) drops() uint64            { return v.dropped }

func (v *vhostLink) close() error {
	v.g.Close()
	return nil
}
