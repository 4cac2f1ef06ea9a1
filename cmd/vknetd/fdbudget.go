package main

import (
	"fmt"
	"log/slog"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/control"
	"github.com/vknetd/vknetd/engine"
	"github.com/vknetd/vknetd/metrics"
)

// fdsPerClient counts two file descriptors for each of --max-clients: a
// connected client holds one, a datagram client also one that pins its
// socket's path; counting every client at two keeps the sum simple and
// leaves room.
const fdsPerClient = 2

// vhostFdsPerClient is what a guest with one queue pair and one memory
// file holds: its socket, a kick and a call eventfd for each of its two
// rings, and a fd of its memory file, kept for an upgrade. Each client is
// budgeted as such a guest besides its fdsPerClient; a guest may make the
// daemon hold more (vhostuser.MaxDeviceFds: 8 queue pairs, 8 memory files,
// a message's 8 fds while it dribbles in), and that comes out of what the
// limit leaves all guests together beyond that (guestFds), counted as they
// ask. A guest asking beyond is closed, not the daemon starved. Each loop may
// hold one message's fds (vhostMessageFds) beyond, for the moment before
// the count refuses them.
const (
	vhostFdsPerClient = engine.GuestFdsEach
	vhostMessageFds   = 8
)

// daemonFds is what the daemon holds for itself: stdio, the pidfile, the
// TAP and its netlink socket, two pollers and their wake-ups, the log,
// secure mode's kernel filter (its program and counter map; about a dozen
// in all, measured), plus some open only for a moment: a client
// refused beyond --max-clients, netlink while the TAP is taken down, a
// /proc file.
const daemonFds = 32

// fdBudget is the most file descriptors a running daemon can hold. Every
// source of them is capped (clients by --max-clients, vknetctl by
// control.MaxConns, monitors by engine.MaxMonitors, --metrics by
// metrics.MaxConns), so a daemon whose limit covers the sum never runs out
// and VM clients always find their descriptors, whoever else connects.
type fdBudget struct {
	clients  int // fdsPerClient for each of --max-clients
	sockets  int // listening: -p, --stream, --dgram, --metrics
	observer int // vknetctl connections, monitors, --metrics connections
	daemon   int // daemonFds
}

func newFdBudget(o *options) fdBudget {
	b := fdBudget{
		clients:  clientFds(o) * o.maxClients,
		sockets:  1,
		observer: control.MaxFds + engine.MaxMonitors,
		daemon:   daemonFds,
	}
	if o.stream != "" {
		b.sockets++
	}
	if o.dgram != "" {
		b.sockets++
	}
	if o.vhostUser != "" {
		b.sockets++
		b.daemon += vhostMessageFds * o.workers
	}
	if o.metrics != "" {
		b.observer += metrics.MaxFds // its listener included
	}
	return b
}

// clientFds is what the budget counts for one client, given the
// listeners: with --vhost-user a guest of one queue pair beside a socket
// client's, twice under --supervise, where a vhost-user guest's fds are
// copied once more while its new state waits to be sent to the
// supervisor (until the end of a round of the loop).
func clientFds(o *options) int {
	switch {
	case o.vhostUser != "" && o.supervise:
		return fdsPerClient + 2*vhostFdsPerClient
	case o.vhostUser != "":
		return fdsPerClient + vhostFdsPerClient
	}
	return fdsPerClient
}

// guestFds is what limit leaves vhost-user guests together
// (engine.Config.GuestFds): all but the daemon's own, the observers', the
// listening sockets' and fdsPerClient for every client; halved under
// --supervise for the copies, which are never more than what the guests
// hold. The budget checked at start makes it at least vhostFdsPerClient
// for every client, which each guest may always hold; guests share what
// is beyond. 0 without --vhost-user.
func (b fdBudget) guestFds(limit uint64, o *options) int {
	if o.vhostUser == "" {
		return 0
	}
	left := int64(min(limit, 1<<30)) - int64(b.sockets+b.observer+b.daemon+fdsPerClient*o.maxClients)
	if o.supervise {
		left /= 2
	}
	return int(max(left, 1))
}

// guestFdsNow is guestFds for the daemon's limit now.
func guestFdsNow(o *options) int {
	var rl unix.Rlimit
	if o.vhostUser == "" || unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) != nil {
		return 0
	}
	return newFdBudget(o).guestFds(uint64(rl.Cur), o)
}

func (b fdBudget) total() int { return b.clients + b.sockets + b.observer + b.daemon }

// check says whether limit, the daemon's RLIMIT_NOFILE, covers the budget,
// and if not how to make it: a higher limit, or the --max-clients that
// fits under this one.
func (b fdBudget) check(limit uint64, maxClients int) error {
	need := b.total()
	if limit >= uint64(need) {
		return nil
	}
	others := need - b.clients
	fix := fmt.Sprintf("raise the limit to %d or more (LimitNOFILE= in vknetd.service, ulimit -n in a shell)", need)
	perClient := b.clients / max(maxClients, 1)
	if fits := (int64(limit) - int64(others)) / int64(perClient); fits >= 1 {
		fix += fmt.Sprintf(", or lower --max-clients to %d", fits)
	}
	return fmt.Errorf("file descriptor limit %d is too low: --max-clients %d needs up to %d (%d per client, %d for vknetctl, monitors, --metrics and listening sockets, %d for the daemon itself); %s",
		limit, maxClients, need, perClient, b.sockets+b.observer, b.daemon, fix)
}

// reserveFds raises the soft RLIMIT_NOFILE to the hard limit (Go does
// this itself on start-up; doing it here says so and covers every
// platform) and refuses to start when even that cannot hold the budget.
// Refusing beats lowering --max-clients quietly: the operator asked for
// that many VMs, and learns now rather than when the last ones cannot
// connect.
func reserveFds(o *options, log *slog.Logger) error {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return fmt.Errorf("reading the file descriptor limit: %w", err)
	}
	if rl.Cur < rl.Max {
		raised := rl
		raised.Cur = raised.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &raised); err == nil {
			rl = raised
		} else {
			log.Warn("cannot raise the file descriptor limit to the hard limit", "soft", uint64(rl.Cur), "hard", uint64(rl.Max), "err", err)
		}
	}
	b := newFdBudget(o)
	if err := b.check(uint64(rl.Cur), o.maxClients); err != nil {
		return err
	}
	log.Info("file descriptors reserved", "limit", uint64(rl.Cur), "budget", b.total(), "max_clients", o.maxClients,
		"vhost_user_fds", b.guestFds(uint64(rl.Cur), o))
	return nil
}
