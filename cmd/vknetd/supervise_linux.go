package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/engine"
	"github.com/vknetd/vknetd/internal/handover"
)

// vknetd --supervise: crashes that no client notices.
//
// The process the user starts becomes the supervisor. It starts the
// daemon as its child, with one end of a socket pair (supervisorFdEnv),
// and from then on only listens to it: the daemon sends its own fds
// (TAP, listeners, control and metrics sockets, pidfile, keeper pipe)
// once, a copy of each client's fds as it accepts it and a word when it
// closes one, and every second its tables and counters. The supervisor
// never reads, writes or polls a client's fd: it holds them, so that a
// daemon that dies does not take the connections with it.
//
// When the socket pair closes without the daemon having said it stops,
// the daemon died (SIGKILL, a panic, the OOM killer): the supervisor
// starts a new one at once and hands it everything as an old daemon does
// in an upgrade (upgrade_linux.go), with the last tables it heard. What
// the dead daemon had read and not yet sent is lost; MAC addresses and
// bindings learned in its last second are learned again by the rules in
// force (secure mode binds nothing it would not bind anyway). The tables'
// times are the snapshot's moved on by the time since it arrived (the
// back-off included): see ageTables.
//
// A vhost-user guest is held too once its device is ready: each time its
// negotiated state changes the daemon sends it again (the record an
// upgrade carries, its ring indices aside, which move with every frame
// and are not kept) with copies of its socket, memory and eventfds, and
// the supervisor keeps the last one as it came, never mapping the memory
// or reading the rings. The new daemon resumes each ring at the used idx
// in guest memory (vhostuser.Recover): the guest notices nothing, and a
// frame the dead daemon had taken from a TX ring and not yet returned is
// taken again. A guest whose rings cannot be resumed (its used idx is no
// ring's), and one whose device was mid negotiation or stopped when the
// daemon died, has its socket closed and must reconnect.
//
// The new daemon runs the binary the dead one ran, not the one the
// supervisor was started from: each daemon, as it attaches (at its start,
// after vknetctl upgrade, after a restart), sends an fd of its own
// executable (/proc/self/exe), and the supervisor starts the next daemon
// through the last one it got (/proc/self/fd). Otherwise a crash after an
// upgrade to another binary, or to the same path replaced on disk, would
// quietly roll the upgrade back, and an older binary cannot read the
// vhost-user records the supervisor holds. Through the fd, a binary
// deleted or replaced since still runs as it was.
//
// A daemon that dies again within 10 s of its start is restarted after a
// back-off (0.25 s doubling to 30 s), said in one log line each time.

const (
	supervisorFdEnv = "VKNETD_SUPERVISOR_FD"
	// execFdEnv names the fd a restarted daemon was started through (its
	// executable, which the supervisor holds): the daemon closes it.
	execFdEnv         = "VKNETD_EXEC_FD"
	snapshotInterval  = time.Second
	quickDeath        = 10 * time.Second
	maxRestartBackoff = 30 * time.Second
)

// supervisorLink is the daemon's side.
type supervisorLink struct {
	mu     sync.Mutex
	conn   *handover.Conn
	broken bool
	log    *slog.Logger
}

func (l *supervisorLink) send(kind byte, payload []byte, fds []int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken {
		return
	}
	if err := l.conn.Send(kind, payload, fds); err != nil {
		l.broken = true
		l.log.Error("the supervisor is gone: clients will not survive a crash of this daemon", "err", err)
	}
}

// supervisorFd is the supervisor's socket when this daemon has one, or -1.
func supervisorFd() int {
	v := os.Getenv(supervisorFdEnv)
	if v == "" {
		return -1
	}
	os.Unsetenv(supervisorFdEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return -1
	}
	unix.CloseOnExec(fd)
	return fd
}

// attachSupervisor starts telling the supervisor on fd what it needs;
// before Run. A fresh daemon sends its own fds first (setup); one that
// adopted them from the supervisor or an older daemon does not.
func (d *daemon) attachSupervisor(fd int, setup bool) {
	l := &supervisorLink{conn: handover.NewConn(fd), log: d.log}
	d.sup = l
	if setup {
		rec, fds := d.record(false)
		rec.Fds = len(fds)
		if payload, err := handover.Encode(rec); err == nil {
			l.send(handover.KindSetup, payload, fds)
		}
	}
	// What the supervisor starts should this daemon die: this binary, as
	// it was when it started, whatever is at its path now.
	if exe, err := unix.Open("/proc/self/exe", unix.O_PATH|unix.O_CLOEXEC, 0); err == nil {
		l.send(handover.KindExecutable, nil, []int{exe})
		unix.Close(exe)
	} else {
		d.log.Warn("supervisor: cannot tell it this daemon's executable; after a crash it starts the one it was started from", "err", err)
	}
	d.engine.NotifyPorts(func(ns []engine.PortNotice) {
		for _, n := range ns {
			fds := n.Fds
			n.Fds = nil
			if b, err := json.Marshal(n); err == nil {
				l.send(handover.KindPort, b, fds)
			}
		}
	})
	go func() {
		tick := time.NewTicker(snapshotInterval)
		defer tick.Stop()
		for {
			select {
			case <-d.engine.Done():
				return
			case <-tick.C:
			}
			st, err := d.engine.Snapshot()
			if err != nil {
				return
			}
			if b, err := json.Marshal(st); err == nil {
				l.send(handover.KindSnapshot, b, nil)
			}
		}
	}()
}

// tellSupervisor says the daemon stops for good (or hands over).
func (d *daemon) tellSupervisor(kind byte, payload []byte) {
	if d.sup != nil {
		d.sup.send(kind, payload, nil)
	}
}

// heldPort is a client the supervisor holds.
type heldPort struct {
	port handover.Port
	fds  []int
}

type supervisor struct {
	o    *options
	args []string
	exe  string // the supervisor's own executable: what it starts without exeFd
	// exeFd is the last daemon's executable (O_PATH), -1 until one said;
	// exePath is where it was when said, for the new daemon's argv[0].
	exeFd    int
	exePath  string
	log      *slog.Logger
	setup    *handover.Record
	setupFds []int
	ports    map[uint32]*heldPort
	snapshot []byte
	// snapshotAt is when snapshot arrived (monotonic): its MAC ages and
	// bindings' times left were measured then.
	snapshotAt time.Time
	stopping   bool
	restarts   uint64
}

// runIfSupervisor runs this process as the supervisor when --supervise
// asks for one and this is not the daemon it started.
func runIfSupervisor(o *options, stdout, stderr io.Writer) (int, bool) {
	if !o.supervise || os.Getenv(supervisorFdEnv) != "" || os.Getenv(handoverFdEnv) != "" {
		return 0, false
	}
	if !o.debug && os.Getenv(readyFdEnv) != "3" {
		return 0, false // the command the user ran: it goes to the background first
	}
	return runSupervisor(o, stdout, stderr), true
}

func runSupervisor(o *options, stdout, stderr io.Writer) int {
	log := stderrLogger(stderr)
	if !o.debug {
		if l, err := syslogLogger(); err == nil {
			log = l
		}
	}
	// Stop signals are the daemon's: it tells us when it stops.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE)
	// Daemons started by an upgrade are orphaned to us, not to init.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		log.Warn("supervisor: cannot reap upgraded daemons", "err", err)
	}
	go reapChildren()
	s := &supervisor{o: o, args: os.Args[1:], log: log, ports: map[uint32]*heldPort{}, exeFd: -1}
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		s.exe = exe
	}
	conn, theirs, err := handover.Pair()
	if err != nil {
		fmt.Fprintf(stderr, "vknetd: %v\n", err)
		return 1
	}
	cmd := exec.Command(s.exe, s.args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	chanEnd := os.NewFile(uintptr(theirs), "supervisor")
	if os.Getenv(readyFdEnv) == "3" {
		// The daemon reports its start to whoever waits, as without us.
		cmd.ExtraFiles = []*os.File{os.NewFile(3, "readiness"), chanEnd}
		cmd.Env = append(os.Environ(), supervisorFdEnv+"=4")
	} else {
		cmd.ExtraFiles = []*os.File{chanEnd}
		cmd.Env = append(os.Environ(), supervisorFdEnv+"=3")
	}
	err = cmd.Start()
	for _, f := range cmd.ExtraFiles {
		f.Close()
	}
	if err != nil {
		fmt.Fprintf(stderr, "vknetd: starting the daemon: %v\n", err)
		return 1
	}
	// Only a daemon the supervisor restarted can die "soon after its
	// start": the first crash of any daemon is answered at once.
	var started time.Time
	quick := 0
	for {
		s.serve(conn)
		conn.Close()
		switch {
		case s.stopping:
			return 0
		case s.setup == nil:
			return 1 // it did not start: it said why
		}
		if !started.IsZero() && time.Since(started) < quickDeath {
			quick++
		} else {
			quick = 0
		}
		for {
			if quick > 0 {
				wait := min(250*time.Millisecond<<(quick-1), maxRestartBackoff)
				s.log.Error("supervisor: the daemon keeps dying soon after its start; backing off", "deaths_in_a_row", quick, "next_start_in", wait.String())
				time.Sleep(wait)
			}
			started = time.Now()
			if conn, err = s.restart(); err == nil {
				break
			}
			s.log.Error("supervisor: starting a new daemon failed", "err", err)
			quick++
		}
	}
}

// serve takes the daemon's messages until its socket closes.
func (s *supervisor) serve(conn *handover.Conn) {
	for {
		kind, payload, fds, err := conn.Recv(0)
		if err != nil {
			return
		}
		switch kind {
		case handover.KindSetup:
			rec, err := handover.Decode(payload, len(fds))
			if err != nil {
				s.log.Error("supervisor: the daemon's setup is unreadable", "err", err)
				handover.CloseFds(fds)
				continue
			}
			handover.CloseFds(s.setupFds)
			s.setup, s.setupFds = rec, fds
			s.log.Info("supervisor: holding the daemon's sockets", "fds", len(fds))
		case handover.KindPort:
			var n engine.PortNotice
			if err := json.Unmarshal(payload, &n); err != nil || len(fds) > engine.MaxHeldFds {
				// No port has more: a guest cannot make us hold more than
				// its device's bounded fds (vhost-user caps its memory
				// regions and rings).
				handover.CloseFds(fds)
				continue
			}
			if h := s.ports[n.ID]; h != nil {
				handover.CloseFds(h.fds)
				delete(s.ports, n.ID)
			}
			if !n.Gone {
				s.ports[n.ID] = &heldPort{port: n.Port, fds: fds}
			} else {
				handover.CloseFds(fds)
			}
		case handover.KindExecutable:
			s.holdExecutable(fds)
		case handover.KindSnapshot:
			s.snapshot, s.snapshotAt = payload, time.Now()
			handover.CloseFds(fds)
		case handover.KindStopping:
			s.stopping = true
			s.release()
			handover.CloseFds(fds)
		default:
			handover.CloseFds(fds)
		}
	}
}

// holdExecutable keeps fds, one fd of the daemon's executable, as what
// the next daemon is started from, replacing the one before.
func (s *supervisor) holdExecutable(fds []int) {
	var st unix.Stat_t
	if len(fds) != 1 || unix.Fstat(fds[0], &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		s.log.Error("supervisor: the daemon's executable is not one regular file; a crash restarts the one before", "fds", len(fds))
		handover.CloseFds(fds)
		return
	}
	if s.exeFd >= 0 {
		unix.Close(s.exeFd)
	}
	s.exeFd = fds[0]
	s.exePath, _ = os.Readlink(fmt.Sprintf("/proc/self/fd/%d", s.exeFd))
}

// release lets go of every fd held, so that the daemon's clean-up (the
// keeper's, a TAP's) is not held up by our copies.
func (s *supervisor) release() {
	for id, h := range s.ports {
		handover.CloseFds(h.fds)
		delete(s.ports, id)
	}
	handover.CloseFds(s.setupFds)
	s.setupFds = nil
}

// record is what the dead daemon handed us, for the new one, with the
// tables' times as of now.
func (s *supervisor) record(now time.Time) (*handover.Record, []int, []int) {
	rec := *s.setup
	rec.Daemon.Restarts = s.restarts + 1
	setupFds := s.setupFds
	var snap handover.Engine
	if s.snapshot != nil {
		json.Unmarshal(s.snapshot, &snap)
	}
	eng := handover.Engine{Accepted: snap.Accepted, Departed: snap.Departed, Listeners: snap.Listeners}
	before := map[uint32]*handover.Port{}
	for i := range snap.Ports {
		before[snap.Ports[i].ID] = &snap.Ports[i]
	}
	have := map[uint32]bool{}
	if tp := before[0]; tp != nil && tp.Kind == "tap" {
		eng.Ports = append(eng.Ports, handover.Port{ID: 0, Kind: "tap", Name: tp.Name, PID: -1, UID: -1, Fd: -1, Counters: tp.Counters})
		have[0] = true
	}
	ids := make([]uint32, 0, len(s.ports))
	for id := range s.ports {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var fds []int
	for _, id := range ids {
		h := s.ports[id]
		p := h.port
		base := len(setupFds) + len(fds)
		if p.Fd >= 0 {
			p.Fd += base
		}
		if p.Dgram != nil {
			g := *p.Dgram
			if g.PathFd >= 0 {
				g.PathFd += base
			}
			p.Dgram = &g
		}
		if b := before[id]; b != nil && b.Kind == p.Kind && b.Name == p.Name {
			p.Counters = b.Counters
		}
		fds = append(fds, h.fds...)
		eng.Ports = append(eng.Ports, p)
		have[id] = true
	}
	for _, m := range snap.MACs {
		if have[m.Port] {
			eng.MACs = append(eng.MACs, m)
		}
	}
	for _, b := range snap.Bindings {
		if have[b.Port] {
			eng.Bindings = append(eng.Bindings, b)
		}
	}
	if s.snapshot != nil {
		ageTables(&eng, now.Sub(s.snapshotAt))
	}
	rec.Engine = eng
	rec.Fds = len(setupFds) + len(fds)
	return &rec, setupFds, fds
}

// ageTables moves tables measured elapsed ago to now: each MAC is older
// by elapsed and each binding with an end has elapsed less left.
// Otherwise every lease and first-use binding would outlive its end by
// the snapshot's age plus the restart (up to 30 s of back-off), and a
// lease that ran out meanwhile would come back live. A binding whose end
// passed is dropped, not kept for a last nanosecond: it is what the dead
// daemon would have done, and its address is bound again, if at all, by
// the rules in force. Bindings that end with their port (0) or never (-1)
// have no time to move.
func ageTables(e *handover.Engine, elapsed time.Duration) {
	if elapsed <= 0 {
		return
	}
	d := int64(elapsed)
	for i := range e.MACs {
		e.MACs[i].AgeNs += min(d, math.MaxInt64-e.MACs[i].AgeNs)
	}
	live := e.Bindings[:0]
	for _, b := range e.Bindings {
		if b.LeftNs > 0 {
			if b.LeftNs <= d {
				continue // ended since the snapshot
			}
			b.LeftNs -= d
		}
		live = append(live, b)
	}
	e.Bindings = live
}

// restart starts a new daemon and hands it what the dead one left, as an
// old daemon does in an upgrade; it returns the new daemon's socket.
func (s *supervisor) restart() (*handover.Conn, error) {
	s.log.Error("supervisor: the daemon died; starting a new one with its clients", "clients", len(s.ports), "restart", s.restarts+1)
	hconn, htheirs, err := handover.Pair()
	if err != nil {
		return nil, err
	}
	defer hconn.Close()
	sconn, stheirs, err := handover.Pair()
	if err != nil {
		unix.Close(htheirs)
		return nil, err
	}
	files := []*os.File{os.NewFile(uintptr(htheirs), "handover"), os.NewFile(uintptr(stheirs), "supervisor")}
	cmd := exec.Command(s.exe, s.args...)
	cmd.Env = append(os.Environ(), handoverFdEnv+"=3", supervisorFdEnv+"=4")
	if s.exeFd >= 0 {
		// The dead daemon's binary, through the fd it sent: the child
		// execs its own fd 5, then closes it (execFdEnv).
		exe, err := unix.FcntlInt(uintptr(s.exeFd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			files[0].Close()
			files[1].Close()
			sconn.Close()
			return nil, fmt.Errorf("holding the daemon's executable: %w", err)
		}
		files = append(files, os.NewFile(uintptr(exe), "executable"))
		cmd.Path = "/proc/self/fd/5"
		cmd.Args[0] = strings.TrimSuffix(s.exePath, " (deleted)")
		cmd.Env = append(cmd.Env, execFdEnv+"=5")
	}
	cmd.ExtraFiles = files
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Dir = "/"
	if s.o.user != "" && os.Geteuid() == 0 {
		// The new daemon is the user from its first instruction, with
		// CAP_NET_ADMIN alone, as the dead one was: never root.
		gid, err := lookupGroup(s.o.group)
		var r *runAs
		if err == nil {
			r, err = lookupUser(s.o.user, gid)
		}
		if err != nil {
			closeFiles(files)
			sconn.Close()
			return nil, err
		}
		groups := make([]uint32, len(r.groups))
		for i, g := range r.groups {
			groups[i] = uint32(g)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(r.uid), Gid: uint32(r.gid), Groups: groups},
			AmbientCaps: []uintptr{unix.CAP_NET_ADMIN}}
	}
	err = cmd.Start()
	closeFiles(files)
	if err != nil {
		sconn.Close()
		return nil, err
	}
	fail := func(step string, err error) (*handover.Conn, error) {
		cmd.Process.Kill()
		sconn.Close()
		return nil, fmt.Errorf("%s: %w", step, err)
	}
	deadline := time.Now().Add(readyTimeout)
	expect := func(want byte) error {
		kind, payload, fds, err := hconn.Recv(time.Until(deadline))
		handover.CloseFds(fds)
		switch {
		case err != nil:
			return err
		case kind == handover.KindError:
			return errors.New(string(payload))
		case kind != want:
			return fmt.Errorf("sent %q, not %q", kind, want)
		}
		return nil
	}
	if err := expect(handover.KindHello); err != nil {
		return fail("starting", err)
	}
	setup := *s.setup
	setup.Daemon.Restarts = s.restarts + 1
	setup.Engine = handover.Engine{}
	setup.Fds = len(s.setupFds)
	payload, err := handover.Encode(&setup)
	if err != nil {
		return fail("setup", err)
	}
	if err := hconn.Send(handover.KindSetup, payload, s.setupFds); err != nil {
		return fail("setup", err)
	}
	if err := expect(handover.KindPrepared); err != nil {
		return fail("building on the setup", err)
	}
	// The tables as of the moment the new daemon takes them: its start,
	// and any back-off before, counted.
	rec, _, engineFds := s.record(time.Now())
	if payload, err = handover.Encode(rec); err != nil {
		return fail("state", err)
	}
	if err := hconn.Send(handover.KindState, payload, engineFds); err != nil {
		return fail("state", err)
	}
	if err := expect(handover.KindReady); err != nil {
		return fail("adopting", err)
	}
	if err := hconn.Send(handover.KindCommit, nil, nil); err != nil {
		return fail("commit", err)
	}
	expect(handover.KindServing)
	s.restarts++
	s.log.Info("supervisor: the new daemon serves", "pid", cmd.Process.Pid, "restarts", s.restarts)
	return sconn, nil
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// reapChildren waits for every child, ours and the orphans of upgraded
// daemons, so that none stays a zombie.
func reapChildren() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGCHLD)
	for {
		for {
			var st unix.WaitStatus
			pid, err := unix.Wait4(-1, &st, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
		<-sigs
	}
}
