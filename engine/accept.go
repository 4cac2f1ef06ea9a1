package engine

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Listeners. The first loop polls every listening socket the caller made
// (Config.Listeners): it accepts SEQPACKET, stream and vhost-user clients
// and makes them ports, and reads datagram listeners itself (dgram.go),
// making a port for each datagram client on its first frame.

// listenerState is one listener and what accepting from it needs.
type listenerState struct {
	Listener
	pausedUntil int64 // accept paused after EMFILE and the like, with back-off
	backoff     time.Duration
	dgram       *dgramListener // a datagram listener's clients and scratch; nil for the others
	// filterCookie keys the kernel filter's drop counter of a datagram
	// listener; 0 when it has no filter.
	filterCookie uint64
}

// listen has l poll ln, the index-th listener.
func (e *Engine) listen(l *loop, index int, ln Listener) (listenerState, error) {
	if ln.Kind == Dgram {
		if err := enableSenderCredentials(ln.Fd); err != nil {
			return listenerState{}, fmt.Errorf("datagram listener %s: asking for senders' credentials (SO_PASSCRED): %w", ln.Path, err)
		}
	}
	if err := l.poll.add(ln.Fd, tokenListener-uint32(index)); err != nil {
		return listenerState{}, fmt.Errorf("watching listener %s: %w", ln.Path, err)
	}
	ls := listenerState{Listener: ln, backoff: 50 * time.Millisecond}
	if ln.Kind == Dgram {
		ls.dgram = newDgramListener(e.cfg.Batch)
		ls.filterCookie = e.attachFilter(ln.Fd, ln.Path)
	}
	return ls, nil
}

// accept takes every pending client of ls. Running out of fds or memory
// pauses this listener with a back-off instead of ending the daemon (the
// original exited on EMFILE); the connected clients keep forwarding.
func (l *loop) accept(ls *listenerState) {
	if ls.pausedUntil != 0 {
		return
	}
	e := l.e
	for i := 0; i < maxAcceptsPerWake; i++ {
		fd, _, err := unix.Accept4(ls.Fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch {
		case err == nil:
			ls.backoff = 50 * time.Millisecond
		case err == unix.EAGAIN:
			ls.backoff = 50 * time.Millisecond
			return
		case err == unix.EINTR || err == unix.ECONNABORTED || err == unix.EPROTO:
			continue
		default:
			e.clientLog.Error("accept failed, pausing new connections", "socket", ls.Path, "err", err,
				"retry_in", ls.backoff.String(), "hint", acceptHint(err))
			if perr := l.poll.remove(ls.Fd); perr != nil {
				e.log.Error("pausing listener", "socket", ls.Path, "err", perr)
			}
			ls.pausedUntil = l.now + int64(ls.backoff)
			if ls.backoff < 2*time.Second {
				ls.backoff *= 2
			}
			return
		}
		if _, err := e.addClient(fd, ls.Kind, ls.Path); errors.Is(err, errTooManyClients) {
			clients, _, _ := e.ports.counts()
			e.clientLog.Warn("client refused: too many clients", "socket", ls.Path, "clients", clients,
				"hint", "raise --max-clients")
			refuse(fd, ls.Kind, fmt.Sprintf("too many clients: --max-clients is %d, and that many are connected: raise --max-clients", e.cfg.MaxClients))
		} else if err != nil {
			e.clientLog.Error("client refused", "socket", ls.Path, "err", err)
			refuse(fd, ls.Kind, err.Error())
		}
	}
}

// refuse closes a connection the switch will not serve; a vhost-user
// front-end is told why first (its protocol has no error message, so the
// note is ours: vhostuser.Refuse).
func refuse(fd int, kind ListenerKind, reason string) {
	if kind == VhostUser {
		refuseVhost(fd, reason)
	}
	closeFd(fd)
}

// resumeListeners re-arms listeners whose back-off has passed.
func (l *loop) resumeListeners() {
	e := l.e
	for i := range e.listeners {
		ls := &e.listeners[i]
		if ls.pausedUntil == 0 || l.now < ls.pausedUntil {
			continue
		}
		ls.pausedUntil = 0
		if err := l.poll.add(ls.Fd, tokenListener-uint32(i)); err != nil {
			e.log.Error("resuming listener", "socket", ls.Path, "err", err)
			ls.pausedUntil = l.now + int64(ls.backoff)
			continue
		}
		e.log.Info("accepting connections again", "socket", ls.Path)
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

// errTooManyClients: --max-clients are connected.
var errTooManyClients = errors.New("too many clients: raise --max-clients")

// addClient makes fd, connected to a listener of kind, a port of the loop
// with the fewest ports. It runs on the first loop.
func (e *Engine) addClient(fd int, kind ListenerKind, via string) (*port, error) {
	id, ok := e.ports.reserve(e.cfg.MaxClients, false)
	if !ok {
		return nil, errTooManyClients
	}
	p, err := e.openClient(e.leastLoaded(), id, fd, kind, via)
	if err != nil {
		e.ports.unreserve(id, false)
		return nil, err
	}
	return p, nil
}

// leastLoaded is the loop a new client goes to: the one with the fewest
// ports, the first of those.
func (e *Engine) leastLoaded() *loop {
	best := e.loops[0]
	for _, l := range e.loops[1:] {
		if l.nports.Load() < best.nports.Load() {
			best = l
		}
	}
	return best
}

// openClient makes fd a port of l numbered id and hands it to l.
func (e *Engine) openClient(l *loop, id uint32, fd int, kind ListenerKind, via string) (*port, error) {
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
		t = newStreamTransport(&l.io, fd, e.maxFrame)
	case VhostUser:
		mem = &guestMemory{budget: &e.guestMem}
		vt, err := e.newVhostTransport(&l.io, fd, id, name, mem, &guestFds{budget: &e.guestFds})
		if err != nil {
			return nil, err
		}
		t = vt
	default:
		t = newMsgTransport(&l.io, fd)
	}
	p := l.openPort(id, t, fd, name)
	p.pid, p.uid = pid, uid
	if kind == Seqpacket {
		p.filterCookie = e.attachFilter(fd, via)
	}
	e.joinUser(p)
	if mem != nil {
		mem.joined(p.user)
	}
	e.ports.accepted1()
	if l == e.loops[0] {
		l.adoptOrKill(p, via) // accept runs on the first loop
	} else {
		l.post(p, via)
	}
	return p, nil
}
