package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/engine"
	"github.com/vknetd/vknetd/internal/ratelog"
)

// Engine is what the server asks of the switch; *engine.Engine has it.
// These calls run on the switch's loop goroutine, so the server never
// shares state with the forwarding path.
type Engine interface {
	Stats() (engine.Stats, error)
	MACs() ([]engine.MACEntry, error)
	Bindings() ([]engine.Binding, error)
	AttachMonitor(fd int, mirror bool, name string) (uint32, error)
}

// Remote is what the server asks of the VXLAN side (--vxlan): which MACs
// sit behind the VXLAN device, keyed like MAC.MAC, and what the device
// carried (ok false without one). Its calls read the kernel's tables over
// netlink on the server's goroutine, off the forwarding path.
type Remote interface {
	RemoteMACs() (map[string]Where, error)
	RemoteTraffic() (t Traffic, ok bool, err error)
}

// Upgrader is the daemon's side of CmdUpgrade: Upgrade hands the daemon
// over to a new process started from binary and returns its pid once it
// serves, or why it does not (the daemon then keeps serving); Upgraded
// is called once the reply is sent (or could not be), after which the
// old daemon exits.
type Upgrader interface {
	Upgrade(binary string) (pid int, err error)
	Upgraded()
}

// ServerConfig is what NewServer needs besides the listener.
type ServerConfig struct {
	Engine Engine
	// Upgrader serves CmdUpgrade; nil refuses it.
	Upgrader Upgrader
	// Restarts, when set, is Stats.Restarts.
	Restarts func() uint64
	// Remote is nil without a VXLAN device.
	Remote Remote
	// GID and Group are the group allowed besides root (the daemon's
	// --group); Group is only used in messages.
	GID   int
	Group string
	Log   *slog.Logger
	// IdleTimeout and WriteTimeout default to DefaultIdleTimeout and
	// DefaultWriteTimeout; tests shorten them.
	IdleTimeout  time.Duration
	WriteTimeout time.Duration
}

const (
	// MaxConns bounds connections being served at once (monitors are
	// handed to the engine and no longer count), so a local user looping
	// on connect cannot make the daemon hold unbounded goroutines or file
	// descriptors. One more is told so and closed at once.
	MaxConns = 32
	// MaxFds is the most file descriptors the server holds: its listener's
	// duplicate, MaxConns connections, each of which may hold a duplicate
	// for a moment while it becomes a monitor (the engine counts attached
	// monitors itself), and one connection being refused.
	MaxFds = 1 + 2*MaxConns + 1
	// DefaultIdleTimeout bounds how long a connection may sit without
	// sending its next request.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultWriteTimeout bounds each reply: a client that asks and never
	// reads would otherwise hold its connection for ever.
	DefaultWriteTimeout = 10 * time.Second
	maxRequest          = 4096
)

// Server answers control requests. It runs on its own goroutines with Go's
// net package: nothing here is on the forwarding path.
type Server struct {
	ln  *net.UnixListener
	cfg ServerConfig
	// log brakes the lines a local user can trigger by connecting (refusals,
	// accept failures), so connecting in a loop cannot flood the log.
	log  *ratelog.Logger
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn map[*net.UnixConn]struct{}
	done bool
}

// FileListener wraps fd, a listening SOCK_SEQPACKET socket, in a net
// listener on a duplicate: the caller keeps fd and still closes it (and
// removes the socket file) as for its other sockets.
func FileListener(fd int) (*net.UnixListener, error) {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup of the control socket: %w", err)
	}
	f := os.NewFile(uintptr(d), "control")
	defer f.Close() // net.FileListener holds its own duplicate
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("control socket is a %T, not a unix socket", l)
	}
	return ul, nil
}

// NewServer serves ln until Close. ln must be a SOCK_SEQPACKET listener.
func NewServer(ln *net.UnixListener, cfg ServerConfig) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	log := ratelog.New(cfg.Log)
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	s := &Server{ln: ln, cfg: cfg, log: log, conn: map[*net.UnixConn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s
}

// Close stops accepting, ends every connection being served, and waits for
// their goroutines. Monitors already handed to the engine are the engine's.
func (s *Server) Close() error {
	s.mu.Lock()
	s.done = true
	err := s.ln.Close()
	for c := range s.conn {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	backoff := 50 * time.Millisecond
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			s.mu.Lock()
			done := s.done
			s.mu.Unlock()
			if done || errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: the switch keeps running, the control
			// socket waits and tries again.
			s.log.Error("control socket: accept failed", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		s.mu.Lock()
		if s.done {
			s.mu.Unlock()
			c.Close()
			return
		}
		busy := len(s.conn) >= MaxConns
		if !busy {
			s.conn[c] = struct{}{}
			s.wg.Add(1)
		}
		s.mu.Unlock()
		if busy {
			sendError(c, fmt.Sprintf("the daemon is serving %d control connections already: try again", MaxConns))
			c.Close()
			continue
		}
		go s.serve(c)
	}
}

func (s *Server) forget(c *net.UnixConn) {
	s.mu.Lock()
	delete(s.conn, c)
	s.mu.Unlock()
	s.wg.Done()
}

func (s *Server) serve(c *net.UnixConn) {
	defer s.forget(c)
	defer c.Close()
	cr, err := connCred(c)
	if err != nil {
		s.log.Error("control socket: reading peer credentials", "err", err)
		sendError(c, "the daemon could not read your credentials: "+err.Error())
		return
	}
	if !allowed(cr, s.cfg.GID) {
		s.log.Warn("control socket: refused", "pid", cr.pid, "uid", cr.uid, "group", s.cfg.Group)
		sendError(c, fmt.Sprintf("permission denied: uid %d is neither root nor in group %s; ask an administrator to run 'usermod -aG %s YOUR_USER', then log in again",
			cr.uid, s.cfg.Group, s.cfg.Group))
		return
	}
	c.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	if err := sendReply(c, Reply{V: Version, OK: true, Hello: Hello}); err != nil {
		return
	}
	buf := make([]byte, maxRequest+1)
	for {
		c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		n, _, flags, _, err := c.ReadMsgUnix(buf, nil)
		if err != nil || n == 0 {
			return // EOF, timeout or Close: nothing to answer
		}
		if n > maxRequest || flags&unix.MSG_TRUNC != 0 {
			sendError(c, fmt.Sprintf("request longer than %d bytes", maxRequest))
			return
		}
		req, err := parseRequest(buf[:n])
		if err != nil {
			sendError(c, err.Error())
			return
		}
		if req.Cmd == CmdMonitor {
			s.monitor(c, cr, req.All)
			return
		}
		if req.Cmd == CmdUpgrade {
			s.upgrade(c, cr, req.Binary)
			return
		}
		msgs, err := s.answer(req)
		if err != nil {
			sendError(c, err.Error())
			return
		}
		c.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		for _, m := range msgs {
			if _, err := c.Write(m); err != nil {
				return // a client that does not read its replies
			}
		}
	}
}

// parseRequest reads one request message: JSON of the version spoken here.
// Its errors are sent to the client as they are.
func parseRequest(b []byte) (Request, error) {
	var req Request
	if err := json.Unmarshal(b, &req); err != nil {
		return Request{}, fmt.Errorf("request is not JSON: %v", err)
	}
	if req.V != Version {
		return Request{}, fmt.Errorf("protocol version %d is not spoken here (this vknetd speaks %d): use the vknetctl built with this vknetd", req.V, Version)
	}
	return req, nil
}

// answer builds the reply messages for a listing request.
func (s *Server) answer(req Request) ([][]byte, error) {
	e := s.cfg.Engine
	switch req.Cmd {
	case CmdPorts:
		st, err := e.Stats()
		if err != nil {
			return nil, engineErr(err)
		}
		ports := make([]Port, 0, len(st.Ports))
		for _, p := range st.Ports {
			ports = append(ports, PortFrom(p))
		}
		return encodeList(ports, func(r *Reply, c []Port) { r.Ports = c })
	case CmdMACs:
		// Ports first: a MAC learned in between shows with an unknown pid,
		// never with another port's.
		st, err := e.Stats()
		if err != nil {
			return nil, engineErr(err)
		}
		ms, err := e.MACs()
		if err != nil {
			return nil, engineErr(err)
		}
		macs := MACsFrom(ms, st.Ports)
		if s.cfg.Remote != nil {
			where, err := s.cfg.Remote.RemoteMACs()
			if err != nil {
				return nil, err
			}
			MarkRemote(macs, where)
		}
		return encodeList(macs, func(r *Reply, c []MAC) { r.MACs = c })
	case CmdBindings:
		bs, err := e.Bindings()
		if err != nil {
			return nil, engineErr(err)
		}
		return encodeList(BindingsFrom(bs), func(r *Reply, c []Binding) { r.Bindings = c })
	case CmdStats:
		st, err := e.Stats()
		if err != nil {
			return nil, engineErr(err)
		}
		sum := Summarize(st)
		if s.cfg.Restarts != nil {
			sum.Restarts = s.cfg.Restarts()
		}
		if s.cfg.Remote != nil {
			t, ok, err := s.cfg.Remote.RemoteTraffic()
			if err != nil {
				return nil, err
			}
			if ok {
				sum.Traffic.Remote = &t
			}
		}
		b, err := json.Marshal(Reply{V: Version, OK: true, Stats: &sum})
		return [][]byte{b}, err
	}
	return nil, fmt.Errorf("unknown command %q: use ports, macs, bindings, stats or monitor", req.Cmd)
}

// upgrade serves CmdUpgrade. Only root may ask: the daemon runs the
// program it is given.
func (s *Server) upgrade(c *net.UnixConn, cr cred, binary string) {
	if cr.uid != 0 {
		sendError(c, fmt.Sprintf("permission denied: only root may upgrade the daemon (it runs the program given), and you are uid %d", cr.uid))
		return
	}
	if s.cfg.Upgrader == nil {
		sendError(c, "this daemon cannot be upgraded in place")
		return
	}
	s.log.Info("upgrade asked", "pid", cr.pid, "binary", binary)
	pid, err := s.cfg.Upgrader.Upgrade(binary)
	if err != nil {
		sendError(c, err.Error())
		return
	}
	c.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	sendReply(c, Reply{V: Version, OK: true, Pid: pid})
	s.cfg.Upgrader.Upgraded()
}

// StopAccepting closes the server's listener (its own duplicate: the
// socket stays open and connections wait in its backlog) and leaves the
// connections being served alone; a daemon handing over stops here.
func (s *Server) StopAccepting() {
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	ln.Close()
}

// ResumeAccepting serves ln, a new duplicate of the control socket, after
// StopAccepting (a handover that failed).
func (s *Server) ResumeAccepting(ln *net.UnixListener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		ln.Close()
		return
	}
	s.ln = ln
	s.wg.Add(1)
	go s.accept()
}

func engineErr(err error) error {
	if errors.Is(err, engine.ErrStopped) {
		return errors.New("the switch is shutting down")
	}
	return fmt.Errorf("the switch did not answer: %w", err)
}

// monitor hands the connection to the engine as a monitor port. The "ok"
// goes first: once attached, the engine may write frames at any moment,
// and a reply after that could land between them.
func (s *Server) monitor(c *net.UnixConn, cr cred, all bool) {
	c.SetReadDeadline(time.Time{})
	c.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	if err := sendReply(c, Reply{V: Version, OK: true}); err != nil {
		return
	}
	fd, err := dupConn(c)
	if err != nil {
		s.log.Error("control socket: monitor", "err", err)
		return
	}
	mode := "floods"
	if all {
		mode = "all"
	}
	name := fmt.Sprintf("pid %d uid %d %s", cr.pid, cr.uid, mode)
	if _, err := s.cfg.Engine.AttachMonitor(fd, all, name); err != nil {
		// The engine did not take fd: the client sees the connection close
		// right after "ok" and says so.
		unix.Close(fd)
		s.log.Error("control socket: monitor refused", "monitor", name, "err", err)
	}
	// c's own descriptor closes on return; the engine keeps the duplicate.
}

// dupConn returns a non-blocking duplicate of c's descriptor for the
// engine's poller.
func dupConn(c *net.UnixConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(raw uintptr) {
		fd, derr = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("dup: %w", derr)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// cred is a peer's credentials; known is false where the platform cannot
// tell (the socket's mode is then the only check).
type cred struct {
	pid           int32
	uid           int64
	groups        []uint32 // primary and supplementary
	groupsUnknown bool     // kernel without SO_PEERGROUPS: only the primary gid is known
	known         bool
}

func connCred(c *net.UnixConn) (cred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return cred{}, err
	}
	var cr cred
	var cerr error
	if err := rc.Control(func(fd uintptr) { cr, cerr = peerCred(int(fd)) }); err != nil {
		return cred{}, err
	}
	return cr, cerr
}

// allowed is the defence in depth behind the socket's mode 0660: root or
// a member of the socket's group, as the peer's credentials say.
func allowed(c cred, gid int) bool {
	if !c.known || c.uid == 0 {
		return true
	}
	for _, g := range c.groups {
		if int64(g) == int64(gid) {
			return true
		}
	}
	// Only a kernel older than 4.13 hides the supplementary groups; the
	// user database is the next best answer there.
	return c.groupsUnknown && userInGroup(c.uid, gid)
}

func sendReply(c *net.UnixConn, r Reply) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = c.Write(b)
	return err
}

func sendError(c *net.UnixConn, msg string) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	sendReply(c, Reply{V: Version, OK: false, Error: msg})
}

func userInGroup(uid int64, gid int) bool {
	u, err := user.LookupId(strconv.FormatInt(uid, 10))
	if err != nil {
		return false
	}
	ids, err := u.GroupIds()
	if err != nil {
		return false
	}
	return slices.Contains(ids, strconv.Itoa(gid))
}
