package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/control"
	"github.com/vknetd/vknetd/engine"
	"github.com/vknetd/vknetd/internal/handover"
	"github.com/vknetd/vknetd/metrics"
)

// vknetctl upgrade: the running daemon (the old one) starts a program
// (the new one) with its own command line and one end of a socketpair as
// fd 3 (handoverFdEnv), and they speak package handover's protocol:
//
//	new: hello            (started, flags parsed)
//	old: setup + fds      (its own: TAP, listeners, control, pidfile...)
//	new: prepared         (TAP adopted, engine built: the slow part)
//	old: state + fds      (its loop frozen: it reads nothing from here
//	                       on; the clients and the tables)
//	new: ready            (everything adopted; it reads nothing yet)
//	old: commit           (the new daemon serves; the old one exits)
//	new: serving          (pidfile written, control socket served:
//	                       vknetctl hears back only now)
//
// The engine is built before the old loop freezes, so clients wait only
// for the export, the transfer and the adoption of their ports.
//
// Until commit the old daemon can take everything back: if the new one
// fails to start, says it cannot read the state, or is not ready within
// readyTimeout, the old one kills it and thaws, having lost nothing (the
// new one has read and sent nothing). Frames clients send meanwhile wait
// in the kernel's socket buffers; the pause is what the clients see.

const (
	handoverFdEnv = "VKNETD_HANDOVER_FD"
	readyTimeout  = 5 * time.Second
	// adoptTimeout is how long a new daemon waits for each step of the
	// old one: longer than readyTimeout, the old one's limit.
	adoptTimeout = 10 * time.Second
)

// upgrade is what a daemon keeps for handing itself over.
type upgrade struct {
	mu    sync.Mutex // one upgrade at a time
	exe   string     // os.Executable() resolved at start: /proc/self/exe would be the old inode
	args  []string
	kinds []engine.ListenerKind // of d.listeners, the control socket's excluded
	// metricsFd is a duplicate of the metrics listener, kept to hand over
	// (the metrics server owns the listener itself), or -1.
	metricsFd int
	// committed is closed when the new daemon has been told to serve;
	// replied when vknetctl has had its answer. Then this one exits.
	committed, replied chan struct{}
	repliedOnce        sync.Once
}

// initUpgrade records, at start, what an upgrade starts.
func (d *daemon) initUpgrade(args []string) {
	d.up.args = append([]string(nil), args...)
	d.up.committed, d.up.replied = make(chan struct{}), make(chan struct{})
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		d.up.exe = exe
	}
}

// Upgrade is control.Upgrader's: hand the daemon over to binary.
func (d *daemon) Upgrade(binary string) (int, error) {
	if !d.up.mu.TryLock() {
		return 0, errors.New("an upgrade is under way already")
	}
	defer d.up.mu.Unlock()
	if binary == "" {
		if binary = d.up.exe; binary == "" {
			return 0, errors.New("the daemon could not find its own executable at start: give the new binary's path")
		}
	}
	pid, pause, err := d.handOver(binary)
	if err != nil {
		d.log.Error("upgrade failed, this daemon keeps serving", "binary", binary, "err", err)
		return 0, fmt.Errorf("upgrade to %s failed, the running daemon keeps serving: %w", binary, err)
	}
	d.log.Info("handed over to the new daemon, exiting", "binary", binary, "new_pid", pid, "pause", pause.String())
	go d.exitHandedOver(pid)
	return pid, nil
}

// Upgraded is control.Upgrader's: vknetctl has its answer.
func (d *daemon) Upgraded() { d.up.repliedOnce.Do(func() { close(d.up.replied) }) }

// exitHandedOver ends this process once vknetctl has heard, without
// cleaning up anything: the sockets, the TAP, the pidfile and the keeper
// are the new daemon's.
func (d *daemon) exitHandedOver(newPid int) {
	select {
	case <-d.up.replied:
	case <-time.After(2 * time.Second):
	}
	d.tellSupervisor(handover.KindHandedOver, []byte(strconv.Itoa(newPid)))
	// systemd follows the new main process (NotifyAccess=main: only we,
	// the main process until now, may say so).
	sdNotify(fmt.Sprintf("MAINPID=%d", newPid))
	os.Exit(0)
}

func (d *daemon) handOver(binary string) (newPid int, pause time.Duration, err error) {
	deadline := time.Now().Add(readyTimeout)
	conn, theirs, err := handover.Pair()
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	theirsFile := os.NewFile(uintptr(theirs), "handover")
	cmd := exec.Command(binary, d.up.args...)
	cmd.Env = append(os.Environ(), handoverFdEnv+"=3")
	cmd.ExtraFiles = []*os.File{theirsFile}
	cmd.Dir = "/"
	if d.o.debug {
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	}
	if d.runAs != nil {
		// Capabilities do not survive exec unless ambient: the new daemon
		// gets CAP_NET_ADMIN, all this one has, and clears the ambient
		// and inheritable sets at once (keepNetAdminOnly).
		cmd.SysProcAttr = &syscall.SysProcAttr{AmbientCaps: []uintptr{unix.CAP_NET_ADMIN}}
	}
	err = cmd.Start()
	theirsFile.Close()
	if err != nil {
		return 0, 0, fmt.Errorf("starting it: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	committed := false
	// Once it has the setup, the new process attaches its kernel filter to
	// the sockets this daemon serves (they are shared): to the datagram
	// listeners as it builds its engine, to the clients as it adopts them.
	// If it fails, this daemon puts its own filter back, the new process
	// dead first so that it attaches nothing after, and only then serves
	// again: a binary with other rules must not leave them behind.
	var frozen *engine.Frozen
	setupSent, paused := false, false
	defer func() {
		if committed {
			return
		}
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(time.Second):
		}
		if setupSent && d.kfilter != nil && frozen == nil {
			frozen, _ = d.engine.Freeze(0) // fails only if the engine stopped
		}
		if frozen != nil {
			if setupSent {
				frozen.Refilter()
			}
			frozen.Thaw()
		}
		if paused {
			d.resumeObservers()
		}
	}()
	// why says what the new process did instead of answering.
	why := func(step string, err error) error {
		if errors.Is(err, handover.ErrTimeout) {
			return fmt.Errorf("the new daemon was not ready within %v (%s)", readyTimeout, step)
		}
		select {
		case werr := <-exited:
			exited <- werr
			return fmt.Errorf("the new daemon exited before it was ready: %s", describeExit(werr))
		case <-time.After(200 * time.Millisecond):
		}
		return fmt.Errorf("the new daemon failed (%s): %w", step, err)
	}
	expect := func(step string, want byte) error {
		kind, payload, fds, err := conn.Recv(time.Until(deadline))
		handover.CloseFds(fds)
		switch {
		case err != nil:
			return why(step, err)
		case kind == handover.KindError:
			return fmt.Errorf("the new daemon refused: %s", payload)
		case kind != want:
			return fmt.Errorf("the new daemon sent %q, not %q (%s)", kind, want, step)
		}
		return nil
	}
	if err := expect("starting", handover.KindHello); err != nil {
		return 0, 0, err
	}
	rec, fds := d.record(true)
	rec.Fds = len(fds)
	payload, err := handover.Encode(rec)
	if err != nil {
		return 0, 0, err
	}
	setupSent = true // maybe in part: the new process may have it
	if err := conn.Send(handover.KindSetup, payload, fds); err != nil {
		return 0, 0, why("sending the setup", err)
	}
	if err := expect("building on the setup", handover.KindPrepared); err != nil {
		return 0, 0, err
	}
	// New connections to the control and metrics sockets wait in their
	// backlogs from here, for whichever daemon serves next.
	d.pauseObservers()
	paused = true
	frozenAt := time.Now()
	if frozen, err = d.engine.Freeze(len(fds)); err != nil {
		return 0, 0, err
	}
	// The deferred clean-up thaws the engine and resumes the observers.
	fail := func(err error) (int, time.Duration, error) { return 0, 0, err }
	if frozen.Refused != nil {
		return fail(frozen.Refused)
	}
	rec.Engine = frozen.State
	rec.Fds = len(fds) + len(frozen.Fds)
	if payload, err = handover.Encode(rec); err != nil {
		return fail(err)
	}
	if err := conn.Send(handover.KindState, payload, frozen.Fds); err != nil {
		return fail(why("sending the state", err))
	}
	if err := expect("adopting the state", handover.KindReady); err != nil {
		return fail(err)
	}
	if err := conn.Send(handover.KindCommit, nil, nil); err != nil {
		return fail(why("commit", err))
	}
	committed = true
	close(d.up.committed)
	// Committed whatever comes now; vknetctl hears back once the new
	// daemon serves, so a script that asks it or reads the pidfile next
	// finds the new one.
	if kind, _, fds, err := conn.Recv(2 * time.Second); err != nil || kind != handover.KindServing {
		handover.CloseFds(fds)
		d.log.Warn("upgrade: the new daemon did not say it serves", "err", err)
	}
	return cmd.Process.Pid, time.Since(frozenAt), nil
}

// record is the daemon's part of the state and its fds; the frozen
// engine's come after them.
func (d *daemon) record(withSupervisor bool) (*handover.Record, []int) {
	var fds []int
	add := func(fd int) int {
		if fd < 0 {
			return -1
		}
		fds = append(fds, fd)
		return len(fds) - 1
	}
	r := &handover.Record{Args: d.up.args}
	dm := &r.Daemon
	dm.Pidfile, dm.Metrics, dm.KeeperAlive, dm.Supervisor = -1, -1, -1, -1
	dm.Restarts = d.restarts
	if d.pid != nil && d.pid.f != nil {
		dm.Pidfile = add(int(d.pid.f.Fd()))
	}
	n := len(d.listeners) - 1 // the control socket is last
	dm.Control = add(d.listeners[n].fd)
	dm.Metrics = add(d.up.metricsFd)
	if withSupervisor && d.sup != nil {
		dm.Supervisor = add(d.sup.conn.Fd())
	}
	if k := d.keeper; k != nil && k.alive != nil {
		dm.KeeperAlive = add(int(k.alive.Fd()))
		dm.KeeperPid = k.pid()
	}
	for i, l := range d.listeners[:n] {
		dm.Listeners = append(dm.Listeners, handover.Listener{Fd: add(l.fd), Kind: uint8(d.up.kinds[i]), Path: l.path, Dev: l.dev, Ino: l.ino})
	}
	dm.TAP = d.tap.Export()
	dm.TAP.Fd = add(d.tap.Fd())
	if k := d.kfilter; k != nil {
		dm.KernelFilter = &handover.KernelFilter{Program: add(k.Program.FD()), Drops: add(k.Drops.FD())}
	}
	return r, fds
}

// pauseObservers stops the control and metrics servers taking new
// connections; the ones being served (this upgrade's) go on.
func (d *daemon) pauseObservers() {
	if d.control != nil {
		d.control.StopAccepting()
	}
	if d.metrics != nil {
		d.metrics.Close()
		d.metrics = nil
	}
}

// resumeObservers undoes pauseObservers after a failed handover.
func (d *daemon) resumeObservers() {
	if d.control != nil {
		if ln, err := control.FileListener(d.listeners[len(d.listeners)-1].fd); err == nil {
			d.control.ResumeAccepting(ln)
		} else {
			d.log.Error("control socket: serving again after the failed upgrade", "err", err)
		}
	}
	if d.up.metricsFd >= 0 && d.metrics == nil {
		if ln, err := fileListener(d.up.metricsFd); err == nil {
			d.metrics = metrics.Serve(ln, d.engine, d.log)
		} else {
			d.log.Error("metrics: serving again after the failed upgrade", "err", err)
		}
	}
}

// fileListener is a net listener on a duplicate of fd.
func fileListener(fd int) (net.Listener, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "listener")
	defer f.Close()
	return net.FileListener(f)
}

// runIfUpgrade runs this process as a new daemon if an old one started
// it (vknetctl upgrade) and says so.
func runIfUpgrade(o *options, stdout, stderr io.Writer) (int, bool) {
	conn := handoverConn()
	if conn == nil {
		return 0, false
	}
	return runAdopted(o, conn, stdout, stderr), true
}

// handoverConn is the old daemon's socket when this process is a new
// daemon started by vknetctl upgrade, else nil.
func handoverConn() *handover.Conn {
	v := os.Getenv(handoverFdEnv)
	if v == "" {
		return nil
	}
	os.Unsetenv(handoverFdEnv)
	if v := os.Getenv(execFdEnv); v != "" {
		// Started by the supervisor through its copy of our executable:
		// a copy we do not need (we send our own, attachSupervisor).
		os.Unsetenv(execFdEnv)
		if fd, err := strconv.Atoi(v); err == nil && fd > 4 {
			unix.Close(fd)
		}
		nameProcess()
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil
	}
	unix.CloseOnExec(fd)
	return handover.NewConn(fd)
}

// runAdopted is a new daemon's life: adopt, wait for commit, serve.
func runAdopted(o *options, conn *handover.Conn, stdout, stderr io.Writer) int {
	log := stderrLogger(stderr)
	if !o.debug {
		if l, err := syslogLogger(); err == nil {
			log = l
		}
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGHUP)
	signal.Ignore(syscall.SIGPIPE)
	if err := conn.Send(handover.KindHello, []byte(strconv.Itoa(handover.Version)), nil); err != nil {
		log.Error("upgrade: the old daemon is gone", "err", err)
		return 1
	}
	d, err := adopt(o, log, conn)
	if err != nil {
		// Nothing adopted is touched: the old daemon keeps it all.
		log.Error("upgrade: cannot take over, the old daemon keeps serving", "err", err)
		conn.Send(handover.KindError, []byte(err.Error()), nil)
		return 1
	}
	if otherRulesThenFail != nil { // only in integration/secure's test binary
		err := errors.New("built with -tags vknetd_rollback_test: refuses every upgrade once it has adopted the clients")
		log.Error("upgrade: cannot take over, the old daemon keeps serving", "err", err)
		conn.Send(handover.KindError, []byte(err.Error()), nil)
		return 1
	}
	if err := conn.Send(handover.KindReady, nil, nil); err != nil {
		log.Error("upgrade: the old daemon is gone before commit", "err", err)
		return 1
	}
	kind, _, fds, err := conn.Recv(adoptTimeout)
	handover.CloseFds(fds)
	if err != nil || kind != handover.KindCommit {
		// The old daemon took everything back: leave without a trace.
		log.Error("upgrade: no commit from the old daemon, it keeps serving", "err", err)
		return 1
	}
	d.takeOver()
	switch {
	case d.supFd >= 0:
		d.attachSupervisor(d.supFd, false) // handed on by an upgraded daemon
	default:
		if fd := supervisorFd(); fd >= 0 {
			d.attachSupervisor(fd, false) // started by the supervisor after a crash
		}
	}
	conn.Send(handover.KindServing, nil, nil)
	conn.Close()
	if o.debug {
		fmt.Fprintln(stdout, d.tap.Name())
	}
	return d.serve(sigs)
}

// adopt builds the daemon from the old one's setup, says it is
// prepared, and adopts the frozen engine's state. On an error nothing may
// be closed or undone: the old daemon still serves with the same sockets
// and TAP.
func adopt(o *options, log *slog.Logger, conn *handover.Conn) (*daemon, error) {
	recv := func(want byte, have int) (*handover.Record, []int, error) {
		kind, payload, fds, err := conn.Recv(adoptTimeout)
		if err != nil {
			return nil, nil, err
		}
		if kind != want {
			handover.CloseFds(fds)
			return nil, nil, fmt.Errorf("the old daemon sent %q, not %q", kind, want)
		}
		rec, err := handover.Decode(payload, have+len(fds))
		if err != nil {
			handover.CloseFds(fds)
			return nil, nil, err
		}
		return rec, fds, nil
	}
	setup, fds, err := recv(handover.KindSetup, 0)
	if err != nil {
		return nil, err
	}
	d, err := adoptDaemon(o, log, setup, fds)
	if err != nil {
		return nil, err
	}
	if err := conn.Send(handover.KindPrepared, nil, nil); err != nil {
		return nil, err
	}
	rec, more, err := recv(handover.KindState, len(fds))
	if err != nil {
		return nil, err
	}
	if !reflect.DeepEqual(rec.Daemon, setup.Daemon) || !slices.Equal(rec.Args, setup.Args) {
		return nil, errors.New("the old daemon's state does not match its setup")
	}
	if err := d.engine.Adopt(&rec.Engine, append(fds, more...)); err != nil {
		return nil, fmt.Errorf("adopting the switch's state: %w", err)
	}
	return d, nil
}

const handoverKindStopping = handover.KindStopping

// nameProcess gives a daemon started through /proc/self/fd/N the name its
// executable has (the kernel named it "N"), for ps, pidof and the log.
func nameProcess() {
	exe, err := os.Executable()
	if err != nil {
		return
	}
	name := filepath.Base(strings.TrimSuffix(exe, " (deleted)"))
	if len(name) > 15 {
		name = name[:15]
	}
	os.WriteFile("/proc/self/comm", []byte(name), 0)
}
