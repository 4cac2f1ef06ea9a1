package engine

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/ring"
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

// dgramListener is what a datagram listener needs beyond the socket: the
// clients it knows by address, and the scratch for reading a batch with
// each sender's address and credentials.
type dgramListener struct {
	peers    map[string]*port // by the client's whole address (dgramKey)
	recv     senderBatch
	names    []unix.RawSockaddrUnix
	nameLens []int
	creds    []senderCred
	key      []byte
	unnamed  uint64 // datagrams from unbound sockets, dropped
}

func newDgramListener(batch int) *dgramListener {
	return &dgramListener{peers: make(map[string]*port), recv: newSenderBatch(batch),
		names: make([]unix.RawSockaddrUnix, batch), nameLens: make([]int, batch),
		creds: make([]senderCred, batch), key: make([]byte, 0, len(unix.RawSockaddrUnix{}.Path))}
}

// receiveDgram reads a batch of datagrams from a dgram listener and
// forwards each from the port of its sender.
func (l *loop) receiveDgram(ls *listenerState) {
	if l.cross.to != nil && !l.crossRoom() {
		return // back-pressure (crossRingLen): the listener stays readable
	}
	refs := l.takeBuffers(l.e.cfg.Batch)
	if len(refs) == 0 {
		return
	}
	dl := ls.dgram
	n, err := dl.recv.recvFrom(&l.io, ls.Fd, refs, dl.names[:len(refs)], dl.nameLens[:len(refs)], dl.creds[:len(refs)])
	for i := 0; i < n; i++ {
		r := refs[i]
		p := l.dgramPort(ls, &dl.names[i], dl.nameLens[i], dl.creds[i], l.pool.Frame(r))
		if p != nil {
			p.dgram.lastSeen = l.now
			l.forwardOne(p, r)
		}
		l.releaseRead(r)
	}
	l.releaseBuffers(refs[n:])
	l.flush()
	if err != nil {
		l.e.log.Error("reading datagram listener", "socket", ls.Path, "err", err)
	}
}

// dgramPort finds or makes the port of the client at addr. It returns nil
// when the datagram is not a frame to forward: vfkit's hello, a sender
// without an address to answer, a client refused, or a sender that is not
// the user who registered the address.
func (l *loop) dgramPort(ls *listenerState, addr *unix.RawSockaddrUnix, addrLen int, from senderCred, frame []byte) *port {
	key := dgramKey(ls.dgram.key[:0], addr, addrLen)
	p := ls.dgram.peers[string(key)] // no allocation: the compiler keeps the key on the stack
	if p != nil && !sameSender(p, from) {
		if !l.replacedSocket(p, from) {
			return nil
		}
		p = nil // forgotten: the sender registers anew
	}
	hello := len(frame) == len(vfkitHello) && [4]byte(frame) == vfkitHello
	if p != nil {
		if hello {
			p.dgram.lastSeen = l.now
			return nil
		}
		return p
	}
	if len(key) == 0 {
		ls.dgram.unnamed++
		if ls.dgram.unnamed == 1 || ls.dgram.unnamed%1000 == 0 {
			l.e.log.Warn("datagram from an unbound socket: no address to answer, dropped",
				"socket", ls.Path, "count", ls.dgram.unnamed, "hint", "the client must bind its own path (QEMU: local.path=)")
		}
		return nil
	}
	p, err := l.addDgramClient(ls, string(key), from)
	if err != nil {
		args := []any{"socket", ls.Path, "client", dgramDisplayName(string(key)), "pid", from.pid, "uid", from.uid, "err", err}
		if hint := refusalHint(err); hint != "" {
			args = append(args, "hint", hint)
		}
		l.e.clientLog.Error("datagram client refused", args...)
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
func (l *loop) replacedSocket(p *port, from senderCred) bool {
	if d := p.dgram; !isAbstract(d.key) && !samePathSocket(d) {
		l.e.clientLog.Info("datagram client's socket file was replaced, forgetting it", "port", p.id, "client", p.name,
			"uid", p.uid, "new_uid", from.uid)
		delete(d.listener.dgram.peers, d.key)
		p.dead = true
		p.left.closing.Store(true)
		return true
	}
	p.cnt.drops[DropWrongUser]++
	l.e.clientLog.Warn("datagram under a client's address from another user, dropped", "port", p.id, "client", p.name,
		"uid", p.uid, "sender_uid", from.uid, "sender_pid", from.pid, "count", p.cnt.drops[DropWrongUser],
		"hint", "only the user who bound the socket may send from it")
	return false
}

// addDgramClient makes a port for the datagram client at key, on the
// listener's loop (the first), which reads its frames.
func (l *loop) addDgramClient(ls *listenerState, key string, from senderCred) (*port, error) {
	id, ok := l.e.ports.reserve(l.e.cfg.MaxClients, false)
	if !ok {
		clients, _, _ := l.e.ports.counts()
		return nil, fmt.Errorf("too many clients (%d): raise --max-clients", clients)
	}
	p, err := l.openDgramClient(ls, id, key, from)
	if err != nil {
		l.e.ports.unreserve(id, false)
	}
	return p, err
}

func (l *loop) openDgramClient(ls *listenerState, id uint32, key string, from senderCred) (*port, error) {
	if err := l.e.userRoom(from.uid); err != nil {
		return nil, err
	}
	d := &dgramState{key: key, pathFd: -1, lastSeen: l.now, listener: ls}
	if !isAbstract(key) {
		fd, dev, ino, err := openClientSocket(key, from.uid)
		if err != nil {
			return nil, err
		}
		d.pathFd, d.dev, d.ino = fd, dev, ino
	}
	fd, err := connectDgram(d)
	switch {
	case err == nil:
		if err := l.poll.add(fd, id); err != nil {
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
		d.via = ls
	default:
		d.closePath()
		return nil, connectRefusal(err)
	}
	p := l.openPort(id, newDgramTransport(&l.io, fd, d, l.e.cfg.Batch), fd, dgramDisplayName(key))
	p.dgram = d
	p.pid, p.uid = from.pid, from.uid
	if fd >= 0 {
		// The client may also send to the switch's own socket for it.
		p.filterCookie = l.e.attachFilter(fd, p.name)
	}
	l.e.joinUser(p)
	ls.dgram.peers[key] = p
	l.join(p)
	l.e.ports.accepted1()
	l.e.clientLog.Info("client connected", "port", id, "client", p.name, "pid", p.pid, "uid", p.uid, "socket", ls.Path,
		"kind", "dgram", "via_listener", d.via != nil)
	return p, nil
}

// connectDgram opens the switch's socket for sending to the client, and
// connects it to the client's socket: the one checked at registration
// (see clientAddr), pinned from then on.
func connectDgram(d *dgramState) (int, error) {
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

// dgramState is what the switch knows of a datagram client: its address,
// and how to reach it.
type dgramState struct {
	key string // the client's whole address (dgramKey): its identity
	// pathFd is an O_PATH fd of the client's socket file, looked up once
	// and checked at registration (-1 for an abstract name); the switch
	// reaches the client only through it, never by its path again.
	pathFd   int
	dev, ino uint64               // of that file: a path naming another is another socket
	addr     unix.RawSockaddrUnix // via only: /proc/self/fd/<pathFd>
	addrLen  int
	lastSeen int64
	listener *listenerState // where the client sends its frames
	// via is set when frames go out through the listener with the client's
	// address on every message, because the client connected its socket to
	// ours and refuses datagrams from anywhere else.
	via *listenerState
}

// dgramTransport is a datagram client's port. Its frames come in through
// the listener (receiveDgram); they go out on the switch's own socket
// connected to the client's, or through the listener.
type dgramTransport struct {
	polledByEngine
	io    *portIO
	fd    int         // the switch's socket connected to the client's; -1 when answered through the listener
	d     *dgramState // the client's address, shared with the engine
	msg   msgBatch    // sends on the connected socket
	named namedBatch  // sends through the listener
}

func newDgramTransport(io *portIO, fd int, d *dgramState, batch int) *dgramTransport {
	return &dgramTransport{io: io, fd: fd, d: d, msg: newMsgBatch(batch), named: newNamedBatch(batch)}
}

func (*dgramTransport) caps() transportCaps { return transportCaps{kind: "dgram"} }

// read takes what arrives on the switch's own socket for the client,
// which only the client could have sent.
func (t *dgramTransport) read(refs []ring.Ref, hungUp bool) readResult {
	n, err := t.msg.recv(t.io, t.fd, hungUp, refs)
	return readResult{n: n, err: err}
}

func (t *dgramTransport) write(q txView) writeResult {
	if t.d.via != nil {
		return t.writeVia(q)
	}
	res := t.msg.send(t.io, t.fd, q)
	switch {
	case errors.Is(res.err, unix.EPERM):
		// The client connected its socket to the listener and takes
		// datagrams only from there.
		if err := t.routeViaListener(); err != nil {
			res.err = err
			return res
		}
		res = t.writeVia(q)
		res.rerouted = true
	case peerGone(res.err):
		// No end of stream will follow on a datagram socket: it is gone.
		res.err = errPeerClosed
	}
	return res
}

// routeViaListener switches the client to being answered through the
// listener, closing the switch's own socket for it (which takes it out of
// the poller). A client with an abstract address cannot be answered that
// way (see setViaAddr).
func (t *dgramTransport) routeViaListener() error {
	if err := setViaAddr(t.d); err != nil {
		return &clientRefused{reason: "the datagram client connected its socket to the listener and cannot be answered through it",
			err: err, hint: refusalHint(err)}
	}
	if t.fd >= 0 {
		closeFd(t.fd)
		t.fd = -1
	}
	t.d.via = t.d.listener
	return nil
}

// writeVia sends queued frames through the listener, addressed to the
// client. A full client queue (EAGAIN, ENOBUFS) is back-pressure: the
// frames stay queued and are retried shortly; it never closes the client.
func (t *dgramTransport) writeVia(q txView) writeResult {
	d := t.d
	res := t.named.sendTo(t.io, q, d.via.Fd, &d.addr, d.addrLen, d.key)
	switch err := res.err; {
	case err == unix.EAGAIN || err == unix.ENOBUFS:
		res.err, res.retryAfter = nil, dgramRetry
	case err == unix.ECONNREFUSED || err == unix.ENOENT:
		res.err = errPeerClosed // its socket is gone
	}
	return res
}

func (t *dgramTransport) close() {
	if t.fd >= 0 {
		closeFd(t.fd)
	}
	t.d.closePath()
}

// forget takes p, a closed datagram client, out of its listener's
// clients, unless another port has its address by now.
func (d *dgramState) forget(p *port) {
	if peers := d.listener.dgram.peers; peers[d.key] == p {
		delete(peers, d.key)
	}
}

// expireDgram forgets datagram clients that have been silent too long.
func (l *loop) expireDgram() {
	idle := int64(l.e.cfg.DgramIdle)
	for i := range l.e.listeners {
		ls := &l.e.listeners[i]
		if ls.dgram == nil {
			continue
		}
		for _, p := range ls.dgram.peers {
			if d := p.dgram; !p.dead && l.now-d.lastSeen > idle {
				l.e.clientLog.Info("datagram client idle, forgetting it", "port", p.id, "client", p.name,
					"idle", time.Duration(l.now-d.lastSeen).Round(time.Second).String())
				p.dead = true
				p.left.closing.Store(true)
			}
		}
	}
}
