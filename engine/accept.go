package engine

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// accept takes every pending client of l. Running out of fds or memory
// pauses this listener with a back-off instead of ending the daemon (the
// original exited on EMFILE); the connected clients keep forwarding.
func (e *Engine) accept(l *listenerState) {
	if l.pausedUntil != 0 {
		return
	}
	for i := 0; i < maxAcceptsPerWake; i++ {
		fd, _, err := unix.Accept4(l.Fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch {
		case err == nil:
			l.backoff = 50 * time.Millisecond
		case err == unix.EAGAIN:
			l.backoff = 50 * time.Millisecond
			return
		case err == unix.EINTR || err == unix.ECONNABORTED || err == unix.EPROTO:
			continue
		default:
			e.clientLog.Error("accept failed, pausing new connections", "socket", l.Path, "err", err,
				"retry_in", l.backoff.String(), "hint", acceptHint(err))
			if perr := e.poll.remove(l.Fd); perr != nil {
				e.log.Error("pausing listener", "socket", l.Path, "err", perr)
			}
			l.pausedUntil = e.now + int64(l.backoff)
			if l.backoff < 2*time.Second {
				l.backoff *= 2
			}
			return
		}
		if e.clients >= e.cfg.MaxClients || len(e.freeIDs) == 0 {
			e.clientLog.Warn("client refused: too many clients", "socket", l.Path, "clients", e.clients,
				"hint", "raise --max-clients")
			e.refuse(fd, l.Kind, fmt.Sprintf("too many clients: --max-clients is %d, and that many are connected: raise --max-clients", e.cfg.MaxClients))
			continue
		}
		if _, err := e.addClient(fd, l.Kind, l.Path); err != nil {
			e.clientLog.Error("client refused", "socket", l.Path, "err", err)
			e.refuse(fd, l.Kind, err.Error())
		}
	}
}

// refuse closes a connection the switch will not serve; a vhost-user
// front-end is told why first (its protocol has no error message, so the
// note is ours: vhostuser.Refuse).
func (e *Engine) refuse(fd int, kind ListenerKind, reason string) {
	if kind == VhostUser {
		refuseVhost(fd, reason)
	}
	closeFd(fd)
}

// resumeListeners re-arms listeners whose back-off has passed.
func (e *Engine) resumeListeners() {
	for i := range e.listeners {
		l := &e.listeners[i]
		if l.pausedUntil == 0 || e.now < l.pausedUntil {
			continue
		}
		l.pausedUntil = 0
		if err := e.poll.add(l.Fd, tokenListener-uint32(i)); err != nil {
			e.log.Error("resuming listener", "socket", l.Path, "err", err)
			l.pausedUntil = e.now + int64(l.backoff)
			continue
		}
		e.log.Info("accepting connections again", "socket", l.Path)
	}
}

func acceptHint(err error) string {
	switch {
	case errors.Is(err, unix.EMFILE):
		return "the daemon is out of file descriptors: raise its limit (ulimit -n, LimitNOFILE=) or lower --max-clients"
	case errors.Is(err, unix.ENFILE):
		return "the system is out of file descriptors (fs.file-max)"
	case errors.Is(err, unix.ENOBUFS), errors.Is(err, unix.ENOMEM):
		return "the kernel is short of memory"
	}
	return "will retry"
}

// addClient makes a connected SEQPACKET fd a port of the switch.
func (e *Engine) addClient(fd int, kind ListenerKind, via string) (*port, error) {
	id := e.freeIDs[len(e.freeIDs)-1]
	pid, uid := peerCred(fd)
	if err := e.userRoom(uid); err != nil {
		return nil, err
	}
	setSndbuf(fd, clientSndbuf)
	name := fmt.Sprintf("pid %d uid %d", pid, uid)
	if pid < 0 {
		name = fmt.Sprintf("fd %d", fd)
	}
	// The transport is chosen once, by the listener's protocol (and only
	// the one chosen is built: each holds a batch's scratch).
	var t transport
	var mem *guestMemory // a vhost-user guest's account of the memory it has us map
	switch kind {
	case Stream:
		t = newStreamTransport(&e.io, fd, e.maxFrame)
	case VhostUser:
		mem = &guestMemory{budget: &e.guestMem}
		vt, err := e.newVhostTransport(fd, id, name, mem)
		if err != nil {
			return nil, err
		}
		t = vt
	default:
		t = newMsgTransport(&e.io, fd)
	}
	if err := e.poll.add(fd, id); err != nil {
		return nil, err
	}
	e.freeIDs = e.freeIDs[:len(e.freeIDs)-1]
	p := e.newPort(id, t, fd, name)
	p.pid, p.uid = pid, uid
	if kind == Seqpacket {
		p.filterCookie = e.attachFilter(fd, via)
	}
	e.joinUser(p)
	if mem != nil {
		mem.joined(p.user)
	}
	e.clients++
	e.accepted++
	e.clientLog.Info("client connected", "port", id, "client", name, "socket", via, "kind", p.caps.kind)
	return p, nil
}
