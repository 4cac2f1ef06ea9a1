package main

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/engine"
	"github.com/vknetd/vknetd/internal/handover"
	"github.com/vknetd/vknetd/secure"
	"github.com/vknetd/vknetd/tap"
)

// adoptDaemon builds a new daemon on the old one's setup and fds, the
// engine included, without the clients (Engine.Adopt takes them).
// The flags must be the old daemon's (they are: it started us with its
// own), and nothing is created, configured or removed: a failure leaves
// the old daemon's network exactly as it is.
func adoptDaemon(o *options, log *slog.Logger, rec *handover.Record, fds []int) (*daemon, error) {
	if !slices.Equal(rec.Args, os.Args[1:]) {
		return nil, fmt.Errorf("started with the flags %q, the running daemon has %q: an upgrade keeps the flags", os.Args[1:], rec.Args)
	}
	fd := func(i int) int {
		if i < 0 {
			return -1
		}
		return fds[i]
	}
	d := &daemon{o: o, log: log, up: upgrade{metricsFd: -1}, supFd: fd(rec.Daemon.Supervisor), restarts: rec.Daemon.Restarts}
	d.initUpgrade(rec.Args)
	dm := &rec.Daemon
	want := flagSockets(o)
	if len(want) != len(dm.Listeners) {
		return nil, fmt.Errorf("the running daemon has %d client sockets, the flags say %d", len(dm.Listeners), len(want))
	}
	var listeners []engine.Listener
	for i, l := range dm.Listeners {
		if l.Path != want[i].path || engine.ListenerKind(l.Kind) != want[i].kind {
			return nil, fmt.Errorf("client socket %d is %s, the flags say %s", i, l.Path, want[i].path)
		}
		d.listeners = append(d.listeners, &unixListener{fd: fd(l.Fd), path: l.Path, dev: l.Dev, ino: l.Ino})
		d.up.kinds = append(d.up.kinds, want[i].kind)
		listeners = append(listeners, engine.Listener{Fd: fd(l.Fd), Kind: want[i].kind, Path: l.Path})
	}
	ctl := &unixListener{fd: fd(dm.Control), path: o.control}
	var st unix.Stat_t
	if unix.Stat(o.control, &st) == nil {
		ctl.dev, ctl.ino = uint64(st.Dev), uint64(st.Ino)
	}
	d.listeners = append(d.listeners, ctl)
	d.pid = &pidfile{path: o.pidfile}
	if p := fd(dm.Pidfile); p >= 0 {
		d.pid.f = os.NewFile(uintptr(p), o.pidfile)
		if unix.Fstat(p, &st) == nil {
			d.pid.dev, d.pid.ino = uint64(st.Dev), uint64(st.Ino)
		}
	}
	if m := fd(dm.Metrics); m >= 0 {
		ln, err := fileListener(m)
		if err != nil {
			return nil, fmt.Errorf("metrics socket: %w", err)
		}
		d.metricsLn, d.up.metricsFd = ln, m
	}
	if a := fd(dm.KeeperAlive); a >= 0 {
		d.keeper = adoptKeeper(a, dm.KeeperPid)
	}
	var err error
	if d.tap, err = tap.Adopt(fd(dm.TAP.Fd), dm.TAP); err != nil {
		return nil, err
	}
	if o.user != "" {
		gid, err := lookupGroup(o.group)
		if err == nil {
			d.runAs, err = lookupUser(o.user, gid)
		}
		if err != nil {
			return nil, err
		}
		if os.Geteuid() != int(d.runAs.uid) {
			return nil, fmt.Errorf("--user %s: started as uid %d: an upgraded daemon runs as the user the first one became", o.user, os.Geteuid())
		}
		caps, err := keepNetAdminOnly(d.runAs)
		if err != nil {
			return nil, err
		}
		log.Info("runs as the user", "user", d.runAs.name, "capabilities", caps)
	}
	policy, err := newPolicy(o, d.tap)
	if err != nil {
		return nil, err
	}
	filterPolicy := policy
	if otherRulesThenFail != nil { // only in integration/secure's test binary
		if filterPolicy, err = otherRulesThenFail(o, d.tap); err != nil {
			return nil, err
		}
	}
	filter := d.adoptKernelFilter(filterPolicy, dm.KernelFilter, fd)
	if d.engine, err = engine.New(engineConfig(o, d.tap, listeners, policy, filter, log)); err != nil {
		return nil, err
	}
	return d, nil
}

// flagSocket is a client socket the flags ask for.
type flagSocket struct {
	path string
	kind engine.ListenerKind
}

// flagSockets lists them in the order start creates them.
func flagSockets(o *options) []flagSocket {
	out := []flagSocket{{o.socket, engine.Seqpacket}}
	if o.stream != "" {
		out = append(out, flagSocket{o.stream, engine.Stream})
	}
	if o.dgram != "" {
		out = append(out, flagSocket{o.dgram, engine.Dgram})
	}
	if o.vhostUser != "" {
		out = append(out, flagSocket{o.vhostUser, engine.VhostUser})
	}
	return out
}

// takeOver starts serving what adopt built, once the old daemon has
// committed: the pidfile names this process, the control and metrics
// sockets are served here.
func (d *daemon) takeOver() {
	pid := strconv.Itoa(os.Getpid())
	switch {
	case d.pid.f != nil:
		if err := d.pid.f.Truncate(0); err == nil {
			_, err = d.pid.f.WriteAt([]byte(pid+"\n"), 0)
		}
	case d.keeper != nil && d.keeper.alive != nil:
		// Under --user the pidfile is root's: the keeper writes it.
		d.keeper.alive.Write([]byte("pid " + pid + "\n"))
	}
	gid, err := lookupGroup(d.o.group)
	if err != nil {
		gid = -1
	}
	if err := d.startObservers(d.listeners[len(d.listeners)-1], gid); err != nil {
		d.log.Error("control socket: not served after the upgrade", "err", err)
	}
	d.log.Info("vknetd took over", "version", version, "tap", d.tap.Name(), "pid", os.Getpid(), "user", d.userName(), "kernel_filter", d.kfilter != nil)
}

// adoptKeeper is the --user keeper a previous daemon started: alive is
// the write end of its pipe, pid its process, watched through a pidfd
// (it is not our child) so that release still waits for its clean-up.
func adoptKeeper(alive, pid int) *keeper {
	k := &keeper{alive: os.NewFile(uintptr(alive), "keeper"), adoptedPid: pid, exited: make(chan error, 1)}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		k.exited <- nil // gone already
		return k
	}
	go func() {
		defer unix.Close(pidfd)
		pfd := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(pfd, -1); err != unix.EINTR {
				break
			}
		}
		k.exited <- nil
	}()
	return k
}

// keepNetAdminOnly leaves this process, an upgraded daemon under --user,
// what the first daemon kept: CAP_NET_ADMIN effective and permitted, no
// ambient or inheritable capability (the old daemon passed CAP_NET_ADMIN
// as ambient, the only way across exec), no_new_privs; checked on every
// thread as at the first drop.
func keepNetAdminOnly(r *runAs) (string, error) {
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0); e != 0 {
		return "", fmt.Errorf("--user %s: clearing ambient capabilities: %w", r.name, e)
	}
	hdr := &unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := &[2]unix.CapUserData{}
	if err := unix.Capget(hdr, &data[0]); err != nil {
		return "", err
	}
	data[0].Effective &= keptCaps
	data[0].Permitted &= keptCaps
	data[0].Inheritable, data[1] = 0, unix.CapUserData{}
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return "", fmt.Errorf("--user %s: capset: %w", r.name, e)
	}
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); e != 0 {
		return "", fmt.Errorf("--user %s: no_new_privs: %w", r.name, e)
	}
	return verifyDropped(r)
}

// otherRulesThenFail is nil but in a binary built with -tags
// vknetd_rollback_test (rollbacktest_linux.go), for integration/secure's
// TestKernelFilterRestoredOnRollback: such a binary, started by vknetctl
// upgrade, loads a kernel filter with other rules than the running
// daemon's (it returns their policy) and attaches it to the sockets it
// adopts, then refuses the handover.
var otherRulesThenFail func(o *options, t *tap.Device) (*secure.Policy, error)
