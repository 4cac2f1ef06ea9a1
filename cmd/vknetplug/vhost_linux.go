package main

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/vhostguest"
	"github.com/vknetd/vknetd/tap"
)

// vhostLink is a vhost-user connection to the daemon's --vhost-user
// socket, the plug playing the guest: its memory is a memfd the daemon
// maps, frames go on split virtqueues in it. It never polls: it asks the
// switch for calls (used_event) before it sleeps and waits for them on the
// call eventfds, as a virtio-net driver waits for interrupts.
//
// With offloads the guest accepts checksum and TSO offloads both ways, so
// frames go with their virtio_net_hdr and may be 64 KiB superframes.
type vhostLink struct {
	g       *vhostguest.Guest
	path    string
	scratch [8]byte
	dropped uint64
}

// The vhost-user link's tokens: the two call eventfds and the socket.
const (
	tokCallRX = tokLink + iota
	tokCallTX
	tokVhostSock
)

// vhostQueueSize is the entries per ring, as QEMU's default. A TX frame
// takes a chain of 16 KiB buffers (a superframe five), an RX frame as many
// 2 KiB buffers as it needs (a superframe 33).
const vhostQueueSize = 256

// vhostRXBufOffload is each RX buffer's size when the switch may send
// superframes: a 64 KiB one then spans 5 buffers, not 33 of the 2 KiB a
// plain frame needs, and the ring holds 4 MiB of them in flight.
const vhostRXBufOffload = 16 << 10

// dialVhost connects to the daemon's vhost-user socket and negotiates the
// device as QEMU would, then posts every receive buffer. With offloads the
// guest accepts checksum and TSO offloads if the switch offers them.
func dialVhost(path string, offloads bool) (*vhostLink, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, dialErr(path, "--vhost-user", err)
	}
	return newVhostLink(fd, path, offloads)
}

// newVhostLink plays the guest on the connected socket fd, which it owns
// from here on.
func newVhostLink(fd int, path string, offloads bool) (*vhostLink, error) {
	o := vhostguest.Options{QueueSize: vhostQueueSize, QuietTX: true, Offloads: offloads}
	if offloads {
		o.RXBufSize = vhostRXBufOffload
	}
	g, err := vhostguest.New(o)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	g.Attach(fd)
	if err := g.Start(); err != nil {
		g.Close()
		return nil, setupErr(path, err)
	}
	g.PostRX(vhostQueueSize)
	return &vhostLink{g: g, path: path}, nil
}

// setupErr explains why setting the device up failed. vknetd says why it
// refuses a guest in a note before closing (vhostguest.RefusedError); a
// connection closed without one was closed by something that does not
// speak vhost-user, most likely another of vknetd's sockets, which drops a
// client whose first bytes make no frame.
func setupErr(path string, err error) error {
	var refused *vhostguest.RefusedError
	switch {
	case errors.As(err, &refused):
		return fmt.Errorf("vknetd refused this guest: %s", refused.Reason)
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE):
		return fmt.Errorf("the connection on %s closed while setting up the vhost-user device, without a reason: check that %s is vknetd's --vhost-user socket (not its -p or --stream socket), and the daemon's log", path, path)
	}
	return fmt.Errorf("setting up the vhost-user device on %s (--vhost-user): %w", path, err)
}

// tapOffloads is what a TAP with TUNSETOFFLOAD CSUM|TSO4|TSO6 hands over
// and takes: the link carries headers only if the switch takes and gives
// all of it.
const tapOffloads = gso.OffloadCsum | gso.OffloadTSO4 | gso.OffloadTSO6

// offloads says whether the switch accepted every offload a TAP with its
// virtio_net_hdr hands over, both ways: then frames may go with headers.
func (v *vhostLink) offloads() bool {
	send, receive := v.g.Offloads()
	return send == tapOffloads && receive == tapOffloads
}

// offloadsAny says whether anything was negotiated at all.
func (v *vhostLink) offloadsAny() bool {
	send, receive := v.g.Offloads()
	return send|receive != 0
}

func (v *vhostLink) gone() error {
	if reason, ok := v.g.Refusal(); ok {
		return fmt.Errorf("vknetd dropped this guest on %s (--vhost-user): %s", v.path, reason)
	}
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

func (v *vhostLink) recv(bufs [][]byte, sizes []int, hdrs []gso.VirtioNetHdr) (int, error) {
	n := v.g.Receive(bufs, sizes, hdrs)
	if n > 0 {
		v.g.PostRX(vhostQueueSize) // every buffer Receive freed
	}
	return n, nil
}

// send puts frames on the TX ring; a frame longer than a superframe
// (which a TAP does not make) is dropped.
func (v *vhostLink) send(frames [][]byte, hdrs []gso.VirtioNetHdr) (int, error) {
	for i, f := range frames {
		if len(f) > gso.MaxFrameLen {
			n := v.g.Send(frames[:i], hdrs)
			if n < i {
				return n, nil
			}
			v.dropped++
			return i + 1, nil
		}
	}
	return v.g.Send(frames, hdrs), nil
}

// sendFrom and recvTo make the link a directLink when the TAP carries
// headers: the guest's TX and RX buffers are the TAP's read and write
// buffers.
func (v *vhostLink) sendFrom(tapfd, limit int) (vhostguest.Moved, error) {
	return v.g.SendFromFD(tapfd, tap.VnetHdrSize, limit)
}

func (v *vhostLink) recvTo(tapfd, limit int) (vhostguest.Moved, error) {
	return v.g.ReceiveToFD(tapfd, tap.VnetHdrSize, limit)
}

func (v *vhostLink) idleIn() bool             { return v.g.RXReady() }
func (v *vhostLink) blockedOut() bool         { return v.g.TXRoom() }
func (v *vhostLink) interest(_, _ bool) error { return nil } // eventfds are drained on each call
func (v *vhostLink) drops() uint64            { return v.dropped }

func (v *vhostLink) close() error {
	v.g.Close()
	return nil
}
