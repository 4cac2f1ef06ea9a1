// Command vknetd is a userspace Ethernet switch for virtual machines: the
// DragonFly BSD vknetd(8) command line and SEQPACKET protocol, on Linux.
//
// This file turns the command line into a running engine and cleans up on
// the way out; the forwarding itself is in package engine.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/control"
	"github.com/vknetd/vknetd/engine"
	"github.com/vknetd/vknetd/mactable"
	"github.com/vknetd/vknetd/metrics"
	"github.com/vknetd/vknetd/secure"
	"github.com/vknetd/vknetd/tap"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	if logTo := os.Getenv(keeperEnv); logTo != "" {
		os.Exit(runKeeper(os.Args[1:], os.Stdout, os.Stderr, logTo))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseArgs(args, stdout)
	if err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "vknetd: %v\n%s\n(vknetd --help lists every option)\n", err, usageLine)
		return 2
	}
	if o.version {
		fmt.Fprintf(stdout, "vknetd %s\n", version)
		return 0
	}
	if o.client {
		if err := runClient(o, stdout); err != nil {
			fmt.Fprintf(stderr, "vknetd: %v\n", err)
			return 1
		}
		return 0
	}
	if status, supervised := runIfSupervisor(o, stdout, stderr); supervised {
		return status // the supervisor of --supervise (supervise_linux.go)
	}
	if status, adopted := runIfUpgrade(o, stdout, stderr); adopted {
		return status // a new daemon started by vknetctl upgrade (upgrade_linux.go)
	}
	ready, isChild := childReadiness()
	if !o.debug && !isChild {
		return startBackground(stdout, stderr)
	}

	var log *slog.Logger
	if o.debug {
		log = stderrLogger(stderr)
	} else if log, err = syslogLogger(); err != nil {
		ready.warn(fmt.Sprintf("no syslog (%v): the daemon's log is discarded; run with -d to see it", err))
		log = slog.New(slog.DiscardHandler)
	}
	// Signals are ours before anyone can learn our pid: a SIGTERM that
	// arrives while starting (or the moment we report ready) is served
	// as soon as the engine runs, with the full clean-up.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGHUP)
	// A background daemon has no terminal; SIGPIPE on a client is an error
	// return, never a death.
	signal.Ignore(syscall.SIGPIPE)
	d, err := start(o, log)
	if err == nil {
		d.initUpgrade(args)
		if fd := supervisorFd(); fd >= 0 {
			d.attachSupervisor(fd, true)
		}
	}
	if err != nil {
		ready.fail(err)
		if o.debug {
			fmt.Fprintf(stderr, "vknetd: %v\n", err)
		}
		return 1
	}
	if note := d.tap.MTUNote(); note != "" {
		ready.warn(note)
	}
	if o.debug {
		fmt.Fprintln(stdout, d.tap.Name())
	}
	ready.ready(d.tap.Name())
	return d.serve(sigs)
}

// daemon is everything a running vknetd holds, in the order it is built
// and torn down in reverse.
type daemon struct {
	o         *options
	log       *slog.Logger
	pid       *pidfile
	tap       *tap.Device
	listeners []*unixListener
	engine    *engine.Engine
	control   *control.Server
	metricsLn net.Listener
	metrics   *metrics.Server
	runAs     *runAs  // --user; nil stays root
	keeper    *keeper // removes the files once the daemon has given up root
	kfilter   *secure.KernelFilter
	up        upgrade // vknetctl upgrade (upgrade_linux.go)
	// sup is the --supervise supervisor's channel, nil without one;
	// restarts how often it started a daemon after a crash
	// (supervise_linux.go).
	sup      *supervisorLink
	supFd    int
	restarts uint64
}

func start(o *options, log *slog.Logger) (_ *daemon, err error) {
	d := &daemon{o: o, log: log, up: upgrade{metricsFd: -1}, supFd: -1}
	defer func() {
		if err != nil {
			d.cleanup()
		}
	}()
	if err = reserveFds(o, log); err != nil {
		return nil, err
	}
	gid, err := lookupGroup(o.group)
	if err != nil {
		return nil, err
	}
	if o.user != "" {
		if d.runAs, err = lookupUser(o.user, gid); err != nil {
			return nil, err
		}
		if err = checkCanDrop(); err != nil {
			return nil, err
		}
	}
	if d.pid, err = lockPidfile(o.pidfile); err != nil {
		return nil, err
	}
	// Every socket path is checked before anything is created, so a
	// refusal leaves the system as it was.
	type clientSocket struct {
		path, flag string
		sotype     int
		kind       engine.ListenerKind
	}
	sockets := []clientSocket{{o.socket, "-p", unix.SOCK_SEQPACKET, engine.Seqpacket}}
	if o.stream != "" {
		sockets = append(sockets, clientSocket{o.stream, "--stream", unix.SOCK_STREAM, engine.Stream})
	}
	if o.dgram != "" {
		sockets = append(sockets, clientSocket{o.dgram, "--dgram", unix.SOCK_DGRAM, engine.Dgram})
	}
	if o.vhostUser != "" {
		sockets = append(sockets, clientSocket{o.vhostUser, "--vhost-user", unix.SOCK_STREAM, engine.VhostUser})
	}
	for _, s := range sockets {
		if err = claimSocketPath(s.path, s.sotype, s.flag); err != nil {
			return nil, err
		}
	}
	if err = claimSocketPath(o.control, unix.SOCK_SEQPACKET, "--control"); err != nil {
		return nil, err
	}
	if o.metrics != "" {
		if d.metricsLn, err = metrics.ListenTCP(o.metrics); err != nil {
			return nil, err
		}
	}
	if d.tap, err = tap.Open(tap.Config{Name: o.tapName, MTU: o.mtu, Bridge: o.bridge, Prefix: o.prefix,
		VXLAN: o.vxlan, FitMTU: !o.mtuSet, Offload: !o.noOffload, USO: !o.noOffload, Mark: deviceMark(d.pid.path)}); err != nil {
		return nil, err
	}
	if note := d.tap.OffloadNote(); note != "" {
		log.Warn(note)
	}
	if note := d.tap.MTUNote(); note != "" {
		log.Warn(note)
	}
	policy, err := newPolicy(o, d.tap)
	if err != nil {
		return nil, err
	}
	var listeners []engine.Listener
	for _, s := range sockets {
		l, err := listenUnix(s.path, s.sotype, gid, s.flag)
		if err != nil {
			return nil, err
		}
		d.listeners = append(d.listeners, l)
		d.up.kinds = append(d.up.kinds, s.kind)
		listeners = append(listeners, engine.Listener{Fd: l.fd, Kind: s.kind, Path: s.path})
	}
	ctl, err := listenUnix(o.control, unix.SOCK_SEQPACKET, gid, "--control")
	if err != nil {
		return nil, err
	}
	d.listeners = append(d.listeners, ctl)
	// Loading BPF needs root (or CAP_BPF): before giveUpRoot.
	filter := d.loadKernelFilter(policy)
	if d.engine, err = engine.New(engineConfig(o, d.tap, listeners, policy, filter, log)); err != nil {
		return nil, err
	}
	// Root ends here: nothing after this line, and nothing a client can
	// reach, runs with more than CAP_NET_ADMIN when --user is given.
	if err = d.giveUpRoot(); err != nil {
		return nil, err
	}
	if err = d.startObservers(ctl, gid); err != nil {
		return nil, err
	}
	mode := "secure"
	if o.unsecure {
		mode = "unsecure"
	}
	log.Info("vknetd started", "version", version, "tap", d.tap.Name(), "address", prefixString(o),
		"bridge", d.tap.Bridge(), "vxlan", d.tap.VXLANDev(), "mtu", d.tap.MTU(), "offload", d.tap.VnetHdr(), "uso", d.tap.USO(), "socket", o.socket, "stream", o.stream, "dgram", o.dgram, "vhost_user", o.vhostUser, "control", o.control, "metrics", o.metrics, "mode", mode, "workers", o.workers, "busy_poll", o.busyPoll, "coalesce", o.coalesce,
		"kernel_filter", d.kfilter != nil, "user", d.userName(), "pid", os.Getpid())
	return d, nil
}

// newPolicy is secure mode's policy for the flags and the TAP.
func newPolicy(o *options, t *tap.Device) (*secure.Policy, error) {
	return secure.New(secure.Config{
		Secure:  !o.unsecure,
		Network: o.prefix,
		// The host is the bridge when the TAP is in one: its address is
		// there, and it answers from the bridge's MAC.
		TapMAC:       t.HostMAC(),
		IPv6:         o.ipv6,
		BindingAge:   o.macAge,
		MaxBindings:  o.macMax,
		PortBindings: o.portIPs,
		MaxPorts:     engine.MaxPorts(o.maxClients),
		UserBindings: o.userIPs,
		UserNets:     o.userNets,
		IPSource:     o.ipSource,
		DHCPServers:  o.dhcpServers,
	})
}

// engineConfig is the engine's configuration for the flags.
func engineConfig(o *options, t *tap.Device, listeners []engine.Listener, policy *secure.Policy,
	filter engine.ClientFilter, log *slog.Logger) engine.Config {
	return engine.Config{
		TapFd:      t.Fd(),
		TapName:    t.Name(),
		TapVnetHdr: t.VnetHdr(),
		Offloads:   !o.noOffload,
		Listeners:  listeners,
		MTU:        t.MTU(), // --mtu, or less to fit a VXLAN underlay
		MACTable: mactable.Config{
			Capacity:   o.macMax,
			PortLimit:  o.portMACs,
			OwnerLimit: o.userMACs,
			HostLimit:  o.remoteMACs,
			MaxAge:     o.macAge,
		},
		Policy:       policy,
		ClientFilter: filter,
		MaxClients:   o.maxClients,
		UserClients:  o.userClients,
		DgramIdle:    o.dgramIdle,
		Workers:      o.workers,
		BusyPoll:     o.busyPoll,
		Coalesce:     o.coalesce,
		Logger:       log,

		GuestMemoryMax:   o.vhostMemoryMax,
		UserGuestMemory:  o.userVhostMemory,
		GuestMemoryTotal: o.vhostMemoryTotal,
		GuestFds:         guestFdsNow(o),
	}
}

func prefixString(o *options) string {
	if !o.prefix.IsValid() {
		return "none"
	}
	return o.prefix.String()
}

// serve runs the engine until SIGTERM or SIGINT, then removes everything
// the daemon created.
func (d *daemon) serve(sigs chan os.Signal) int {
	runErr := make(chan error, 1)
	go func() { runErr <- d.engine.Run() }()
	stopPins, pinsDone := make(chan struct{}), make(chan struct{})
	if d.tap.Bridge() != "" {
		go d.pinClientMACs(stopPins, pinsDone)
	} else {
		close(pinsDone)
	}
	status := 0
loop:
	for {
		select {
		case s := <-sigs:
			switch s {
			case syscall.SIGTERM, syscall.SIGINT:
				d.log.Info("stopping", "signal", s.String())
				d.engine.Stop()
			case syscall.SIGUSR1:
				d.logCounters()
			case syscall.SIGHUP:
				if n, err := d.engine.FlushMACs(); err == nil {
					d.log.Info("SIGHUP: forgot learned MAC addresses", "entries", n)
				}
			}
		case err := <-runErr:
			if err != nil {
				d.log.Error("event loop failed", "err", err)
				status = 1
			}
			break loop
		}
	}
	signal.Stop(sigs)
	close(stopPins)
	<-pinsDone
	d.cleanup()
	d.log.Info("vknetd stopped")
	return status
}

func (d *daemon) logCounters() {
	s, err := d.engine.Stats()
	if err != nil {
		return
	}
	d.log.Info("counters", "clients", s.Clients, "accepted", s.Accepted, "macs", s.MACs, "mac_moves", s.MACMoves,
		"buffers_free", s.PoolFree, "buffers", s.PoolCap, "listener_drop_kernel-filter", s.ListenerKernelDrops)
	for _, p := range append(s.Ports, s.Departed) {
		attrs := []any{"port", p.ID, "kind", p.Kind, "name", p.Name,
			"rx_frames", p.RxFrames, "rx_bytes", p.RxBytes, "tx_frames", p.TxFrames, "tx_bytes", p.TxBytes,
			"macs", p.MACs, "queued", p.Queued, "unlearned", p.Unlearned}
		if p.Offloads != "" && p.Offloads != "-" {
			attrs = append(attrs, "offloads", p.Offloads)
		}
		if p.Kind == "vhost-user" {
			attrs = append(attrs, "kicks", p.Kicks)
		}
		for _, dr := range p.Drops {
			attrs = append(attrs, "drop_"+dr.Reason, dr.Count)
		}
		d.log.Info("port counters", attrs...)
	}
}

// cleanup undoes start in reverse order; each step tolerates what was
// never done.
func (d *daemon) cleanup() {
	// A supervisor lets go of its copies first: it must not hold the
	// keeper or a TAP the daemon removes.
	d.tellSupervisor(handoverKindStopping, nil)
	d.stopObservers()
	for _, l := range d.listeners {
		l.close()
	}
	if d.tap != nil {
		if err := d.tap.Close(); err != nil {
			d.log.Error("restoring TAP", "tap", d.tap.Name(), "err", err)
		}
	}
	d.pid.remove()
	d.keeper.release(d.log)
	d.closeKernelFilter()
}
