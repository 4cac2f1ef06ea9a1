package engine

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Datagram clients (QEMU -netdev dgram, vfkit) have no connection: each
// binds its own socket path and sends frames to the listener. The switch
// knows a client by that source path, makes a port for it on its first
// datagram, and forgets it after --dgram-idle without traffic, or at once
// when its socket is gone.
//
// Frames go back through a socket of the switch's own connected to the
// client's socket (only ever one the client owns: see dgram_owner_linux.go),
// because then the kernel reports when the client's full
// receive queue has room again (it does not for unconnected sends). A
// client that connected its socket to the listener accepts datagrams only
// from the listener's address; it is served through the listener instead,
// with a short retry timer as back-pressure.

// vfkitHello is the 4-byte datagram vfkit sends before its first frame.
var vfkitHello = [4]byte{'V', 'F', 'K', 'T'}

const (
	defaultDgramIdle = 60 * time.Second
	dgramRetry       = time.Millisecond
)

// senderCred is who sent a datagram, as the kernel says (SCM_CREDENTIALS);
// -1 where the platform does not tell.
type senderCred struct{ pid, uid int32 }

// receiveDgram reads a batch of datagrams from a dgram listener and
// forwards each from the port of its sender.
func (e *Engine) receiveDgram(l *listenerState) {
	refs := e.takeBuffers()
	if len(refs) == 0 {
		return
	}
	n, err := e.io.recvFrom(e, l.Fd, refs, e.dgNames[:len(refs)], e.dgNameLens[:len(refs)], e.dgCreds[:len(refs)])
	for i := 0; i < n; i++ {
		r := refs[i]
		p := e.dgramPort(l, &e.dgNames[i], e.dgNameLens[i], e.dgCreds[i], e.pool.Frame(r))
		if p != nil {
			p.dgram.lastSeen = e.now
			e.forwardOne(p, r)
		}
		e.pool.Release(r)
	}
	e.releaseBuffers(refs[n:])
	e.flush()
	if err != nil {
		e.log.Error("reading datagram listener", "socket", l.Path, "err", err)
	}
}

// dgramPort finds or makes the port of the client at addr. It returns nil
// when the datagram is not a frame to forward: vfkit's hello, a sender
// without an address to answer, a client refused, or a sender that is not
// the user who registered the address.
func (e *Engine) dgramPort(l *listenerState, addr *unix.RawSockaddrUnix, addrLen int, from senderCred, frame []byte) *port {
	key := dgramKey(e.dgKey[:0], addr, addrLen)
	p := e.dgramPeers[string(key)] // no allocation: the compiler keeps the key on the stack
	if p != nil && !sameSender(p, from) {
		if !e.replacedSocket(p, from) {
			return nil
		}
		p = nil // forgotten: the sender registers anew
	}
	hello := len(frame) == len(vfkitHello) && [4]byte(frame) == vfkitHello
	if p != nil {
		if hello {
			p.dgram.lastSeen = e.now
			return nil
		}
		return p
	}
	if len(key) == 0 {
		l.unnamed++
		if l.unnamed == 1 || l.unnamed%1000 == 0 {
			e.log.Warn("datagram from an unbound socket: no address to answer, dropped",
				"socket", l.Path, "count", l.unnamed, "hint", "the client must bind its own path (QEMU: local.path=)")
		}
		return nil
	}
	p, err := e.addDgramClient(l, string(key), from)
	if err != nil {
		args := []any{"socket", l.Path, "client", dgramDisplayName(string(key)), "pid", from.pid, "uid", from.uid, "err", err}
		if hint := refusalHint(err); hint != "" {
			args = append(args, "hint", hint)
		}
		e.clientLog.Error("datagram client refused", args...)
		return nil
	}
	if hello {
		return nil
	}
	return p
}

// sameSender: every datagram under a client's address must come from the
// user that registered it (unknown on the BSDs), so a socket another user
// binds to a freed name cannot inherit the port, its MACs and addresses.
func sameSender(p *port, from senderCred) bool {
	return from.uid == p.uid || from.uid < 0 || p.uid < 0
}

// replacedSocket handles a datagram from another user under p's address.
// If p's socket file is gone or replaced, p is stale: it is forgotten at
// once and replacedSocket returns true, so the sender can register. If not,
// the datagram is dropped, counted on p and logged.
func (e *Engine) replacedSocket(p *port, from senderCred) bool {
	if !isAbstract(p.dgram.key) && !samePathSocket(p.dgram) {
		e.clientLog.Info("datagram client's socket file was replaced, forgetting it", "port", p.id, "client", p.name,
			"uid", p.uid, "new_uid", from.uid)
		delete(e.dgramPeers, p.dgram.key)
		p.dead = true
		return true
	}
	p.cnt.drops[DropWrongUser]++
	e.clientLog.Warn("datagram under a client's address from another user, dropped", "port", p.id, "client", p.name,
		"uid", p.uid, "sender_uid", from.uid, "sender_pid", from.pid, "count", p.cnt.drops[DropWrongUser],
		"hint", "only the user who bound the socket may send from it")
	return false
}

func (e *Engine) addDgramClient(l *listenerState, key string, from senderCred) (*port, error) {
	if e.clients >= e.cfg.MaxClients || len(e.freeIDs) == 0 {
		return nil, fmt.Errorf("too many clients (%d): raise --max-clients", e.clients)
	}
	if err := e.userRoom(from.uid); err != nil {
		return nil, err
	}
	d := &dgramState{key: key, pathFd: -1, lastSeen: e.now, listener: l}
	if !isAbstract(key) {
		fd, dev, ino, err := openClientSocket(key, from.uid)
		if err != nil {
			return nil, err
		}
		d.pathFd, d.dev, d.ino = fd, dev, ino
	}
	id := e.freeIDs[len(e.freeIDs)-1]
	fd, err := e.connectDgram(d)
	switch {
	case err == nil:
		if err := e.poll.add(fd, id); err != nil {
			closeFd(fd)
			d.closePath()
			return nil, err
		}
	case errors.Is(err, unix.EPERM):
		// The client connected its socket to the listener and accepts
		// datagrams only from there.
		if err := setViaAddr(d); err != nil {
			d.closePath()
			return nil, err
		}
		fd = -1
		d.via = l
	default:
		d.closePath()
		return nil, connectRefusal(err)
	}
	e.freeIDs = e.freeIDs[:len(e.freeIDs)-1]
	p := e.newPort(id, kindDgram, fd, dgramDisplayName(key))
	p.dgram = d
	p.pid, p.uid = from.pid, from.uid
	e.joinUser(p)
	e.dgramPeers[key] = p
	e.clients++
	e.accepted++
	e.clientLog.Info("client connected", "port", id, "client", p.name, "pid", p.pid, "uid", p.uid, "socket", l.Path,
		"kind", "dgram", "via_listener", d.via != nil)
	return p, nil
}

// connectDgram opens the switch's socket for sending to the client, and
// connects it to the client's socket: the one checked at registration
// (see clientAddr), pinned from then on.
func (e *Engine) connectDgram(d *dgramState) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Connect(fd, clientAddr(d)); err != nil {
		closeFd(fd)
		return -1, err
	}
	setSndbuf(fd, clientSndbuf)
	return fd, nil
}

func connectRefusal(err error) error {
	switch {
	case errors.Is(err, unix.EACCES):
		return &clientRefused{reason: "the daemon may not write to its socket", err: err,
			hint: fmt.Sprintf("let the daemon (uid %d) write the client's socket: bind it with a mode or group that allows it", os.Geteuid())}
	case errors.Is(err, unix.ECONNREFUSED), errors.Is(err, unix.ENOENT):
		return &clientRefused{reason: "nobody holds its socket any more", err: err}
	}
	return &clientRefused{reason: "cannot connect to its socket", err: err}
}

// closePath lets go of the client's socket file.
func (d *dgramState) closePath() {
	if d.pathFd >= 0 {
		closeFd(d.pathFd)
		d.pathFd = -1
	}
}

// routeViaListener switches a client to being answered through the
// listener, closing the switch's own socket for it. A client with an
// abstract address cannot be answered that way (see setViaAddr).
func (e *Engine) routeViaListener(p *port) error {
	if err := setViaAddr(p.dgram); err != nil {
		e.clientLog.Warn("datagram client connected its socket to the listener and cannot be answered through it, closing it",
			"port", p.id, "client", p.name, "err", err, "hint", refusalHint(err))
		return err
	}
	if p.fd >= 0 {
		e.poll.remove(p.fd)
		closeFd(p.fd)
		p.fd = -1
		p.writeArmed = false
	}
	p.dgram.via = p.dgram.listener
	e.clientLog.Info("datagram client takes frames only from the listener's address; answering through it",
		"port", p.id, "client", p.name)
	return nil
}

// expireDgram forgets datagram clients that have been silent too long.
func (e *Engine) expireDgram() {
	idle := int64(e.cfg.DgramIdle)
	for _, p := range e.live {
		if p.kind == kindDgram && !p.dead && e.now-p.dgram.lastSeen > idle {
			e.clientLog.Info("datagram client idle, forgetting it", "port", p.id, "client", p.name,
				"idle", time.Duration(e.now-p.dgram.lastSeen).Round(time.Second).String())
			p.dead = true
		}
	}
}

// retryDgram sends to listener-routed clients whose retry time has come.
func (e *Engine) retryDgram() {
	for _, p := range e.live {
		if p.kind != kindDgram || p.dgram.via == nil || p.dgram.retryAt == 0 || p.dead {
			continue
		}
		if e.now < p.dgram.retryAt {
			e.retryPending = true // not yet: keep the timer running
			continue
		}
		p.dgram.retryAt = 0
		e.transmit(p)
	}
}

// writeDgramVia sends queued frames through the listener, addressed to
// the client. A full client queue (EAGAIN, ENOBUFS) is back-pressure: the
// frames stay queued and are retried shortly; it never closes the client.
func (e *Engine) writeDgramVia(p *port) error {
	d := p.dgram
	err := e.io.sendTo(e, p, d.via.Fd, &d.addr, d.addrLen)
	switch {
	case err == unix.EAGAIN || err == unix.ENOBUFS:
		d.retryAt = e.now + int64(dgramRetry)
		return errRetryLater
	case err == unix.ECONNREFUSED || err == unix.ENOENT:
		return errPeerClosed // its socket is gone
	case err != nil:
		return err
	}
	return nil
}

// sent is the common tail of a batched send: count and release the first
// n queued frames.
func (e *Engine) sent(p *port, n int) {
	for i := 0; i < n; i++ {
		r := p.txq.At(i)
		p.cnt.txFrames++
		p.cnt.txBytes += uint64(e.pool.Len(r))
		e.pool.Release(r)
	}
	p.txq.Drop(n)
}
