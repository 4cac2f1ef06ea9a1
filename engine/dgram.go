package engine

import (
	"fmt"
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
// client's path, because then the kernel reports when the client's full
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

// receiveDgram reads a batch of datagrams from a dgram listener and
// forwards each from the port of its sender.
func (e *Engine) receiveDgram(l *listenerState) {
	refs := e.takeBuffers()
	if len(refs) == 0 {
		return
	}
	n, err := e.io.recvFrom(e, l.Fd, refs, e.dgNames[:len(refs)], e.dgNameLens[:len(refs)])
	for i := 0; i < n; i++ {
		r := refs[i]
		p := e.dgramPort(l, &e.dgNames[i], e.dgNameLens[i], e.pool.Frame(r))
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
// when the datagram is not a frame to forward: vfkit's hello, or a sender
// without an address to answer.
func (e *Engine) dgramPort(l *listenerState, addr *unix.RawSockaddrUnix, addrLen int, frame []byte) *port {
	key := e.dgKey[:0]
	for _, c := range addr.Path[:max(0, min(addrLen-2, len(addr.Path)))] {
		if c == 0 && len(key) > 0 {
			break
		}
		key = append(key, byte(c))
	}
	p := e.dgramPeers[string(key)] // no allocation: the compiler keeps the key on the stack
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
	p, err := e.addDgramClient(l, string(key), addr, addrLen)
	if err != nil {
		e.log.Error("datagram client refused", "socket", l.Path, "client", string(key), "err", err)
		return nil
	}
	if hello {
		return nil
	}
	return p
}

func (e *Engine) addDgramClient(l *listenerState, key string, addr *unix.RawSockaddrUnix, addrLen int) (*port, error) {
	if e.clients >= e.cfg.MaxClients || len(e.freeIDs) == 0 {
		return nil, fmt.Errorf("too many clients (%d): raise --max-clients", e.clients)
	}
	if err := e.userRoom(-1); err != nil {
		return nil, err
	}
	d := &dgramState{key: key, addr: *addr, addrLen: addrLen, lastSeen: e.now, listener: l}
	id := e.freeIDs[len(e.freeIDs)-1]
	fd, err := e.connectDgram(key)
	if err != nil {
		// The client accepts datagrams only from the address it connected
		// to (EPERM), or something odd: answer through the listener.
		fd = -1
		d.via = l
	} else if err := e.poll.add(fd, id); err != nil {
		closeFd(fd)
		return nil, err
	}
	e.freeIDs = e.freeIDs[:len(e.freeIDs)-1]
	p := e.newPort(id, kindDgram, fd, key)
	p.dgram = d
	e.joinUser(p)
	e.dgramPeers[key] = p
	e.clients++
	e.accepted++
	e.log.Info("client connected", "port", id, "client", key, "socket", l.Path, "kind", "dgram",
		"via_listener", d.via != nil)
	return p, nil
}

// connectDgram opens the switch's socket for sending to the client at path
// ("@name" for an abstract address).
func (e *Engine) connectDgram(path string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	name := path
	if name[0] == 0 {
		name = "@" + name[1:]
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: name}); err != nil {
		closeFd(fd)
		return -1, err
	}
	setSndbuf(fd, clientSndbuf)
	return fd, nil
}

// routeViaListener switches a client to being answered through the
// listener, closing the switch's own socket for it.
func (e *Engine) routeViaListener(p *port) {
	if p.fd >= 0 {
		e.poll.remove(p.fd)
		closeFd(p.fd)
		p.fd = -1
		p.writeArmed = false
	}
	p.dgram.via = p.dgram.listener
	e.log.Info("datagram client takes frames only from the listener's address; answering through it",
		"port", p.id, "client", p.name)
}

// expireDgram forgets datagram clients that have been silent too long.
func (e *Engine) expireDgram() {
	idle := int64(e.cfg.DgramIdle)
	for _, p := range e.live {
		if p.kind == kindDgram && !p.dead && e.now-p.dgram.lastSeen > idle {
			e.log.Info("datagram client idle, forgetting it", "port", p.id, "client", p.name,
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
