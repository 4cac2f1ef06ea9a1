// Package engine is the switch: event loops over non-blocking fds that
// read frames in batches into a fixed buffer pool, check them (secure
// mode), learn and look up MAC addresses, and queue buffer references on
// the destination ports, which are flushed in batches.
//
// Where to start reading, one file per part:
//   - engine.go: Engine, the switch's shared state (configuration, the
//     MAC table, the secure-mode policy, the buffer pool, users, the
//     guest-memory budget), New and Run.
//   - loop.go: loop, one event loop and the ports it owns; its one round
//     is loop.step. forward.go is the decision for one frame (forwardOne).
//     With --workers there are several loops, and crossloop.go hands a
//     frame from one to another on lock-free rings.
//   - ports.go: the port table (ids, counts) and opening and closing ports.
//   - accept.go: listeners and accepting clients.
//   - offload.go: superframes: delivered whole or cut, on one path.
//   - transport.go: the narrow contract every kind of port (TAP,
//     SEQPACKET, stream, datagram, monitor, vhost-user) implements; the
//     loop never asks which kind a port is.
//   - control.go, listing.go, stats.go: what other goroutines may ask.
//   - handover.go, supervise.go: the switch handed to a new process
//     (Freeze, Adopt) and what a supervisor keeps for after a crash.
package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/ratelog"
	"github.com/vknetd/vknetd/mactable"
	"github.com/vknetd/vknetd/ring"
	"github.com/vknetd/vknetd/secure"
)

// ListenerKind is the client protocol a listening socket speaks.
type ListenerKind uint8

const (
	// Seqpacket is the original vknetd protocol: a SOCK_SEQPACKET unix
	// socket carrying one Ethernet frame per message.
	Seqpacket ListenerKind = iota
	// Stream is QEMU's -netdev stream: SOCK_STREAM, each frame preceded
	// by its 4-byte big-endian length.
	Stream
	// Dgram is QEMU's -netdev dgram and vfkit: a bound SOCK_DGRAM socket,
	// one frame per datagram, clients known by their source path.
	Dgram
	// VhostUser is a vhost-user back-end socket (SOCK_STREAM): each
	// connection is one guest's virtio-net device, its frames on virtio
	// rings in guest memory shared with the switch (Linux only).
	VhostUser
)

// Listener is a listening socket the engine accepts clients from. The
// caller created it (path, permissions) and closes it after Run returns;
// the engine only polls it.
type Listener struct {
	Fd   int
	Kind ListenerKind
	Path string
}

// Config is everything the engine needs; cmd/vknetd builds it from flags.
type Config struct {
	// TapFd is the TAP's non-blocking fd, or -1 for a switch without a TAP
	// (benchmarks and tests).
	TapFd   int
	TapName string
	// TapVnetHdr: the TAP fd carries a virtio_net_hdr (tap.VnetHdrSize
	// bytes) before every frame, with TSO and checksum offload on
	// (tap.Device.VnetHdr). Superframes read from it cross the switch
	// whole to ports that negotiated the offloads and are cut into MTU
	// frames (package gso) for the others; superframes from those ports
	// go to the TAP whole, in one write.
	TapVnetHdr bool
	// Offloads offers vhost-user guests checksum offload and TSO (CSUM,
	// GUEST_CSUM, HOST_TSO4/6, GUEST_TSO4/6), so their superframes cross
	// the switch whole too (--no-offload turns it off).
	Offloads bool
	// LargeBuffers is how many superframe buffers (gso.MaxFrameLen bytes,
	// apart from the pool's small ones) the switch has when TapVnetHdr or
	// Offloads is set (default 32: 2 MiB). When they are all in use,
	// superframes from the TAP are cut as they are read and those from
	// guests wait in the guests' rings.
	LargeBuffers int

	Listeners []Listener

	// MTU bounds frames: the largest accepted is MTU+14 (the Ethernet
	// header), MTU+18 with an 802.1Q tag. Larger frames are dropped as
	// oversize.
	MTU int

	// MACTable configures learning; MaxPorts is filled in by the engine.
	MACTable mactable.Config

	// Policy is the secure-mode policy. Required: with -U it is a policy
	// built with Secure=false, which passes everything.
	Policy *secure.Policy
	// ClientFilter, in secure mode, is attached to the client sockets the
	// kernel can filter (see ClientFilter). nil: userspace only.
	ClientFilter ClientFilter

	MaxClients int // connected clients at most (default 1024)
	// UserClients is how many clients one user (uid) may have connected
	// at once (default MaxClients: no limit of its own). MACTable's
	// OwnerLimit is the users' MAC limit.
	UserClients int
	DgramIdle   time.Duration // a datagram client silent this long is forgotten (default 60s)
	QueueLen    int           // per-port transmit queue length in frames (default 256)
	Batch       int           // frames per read or write syscall batch (default 32)
	// Workers is how many event loops share the switch (--workers,
	// default 1): each owns some ports, clients go to the loop with the
	// fewest, and frames between loops go through lock-free rings
	// (crossloop.go).
	Workers int
	// BusyPoll is how long a loop keeps looking at its ports' shared
	// rings (vhost-user guests) after frames last moved, instead of
	// sleeping in the poller (--busy-poll; 0, the default: it sleeps at
	// once, and idle guests cost no CPU). See busypoll.go.
	BusyPoll time.Duration
	// Coalesce is how long a loop whose guests send without pause sleeps
	// between looks at their rings, their kicks left off (--coalesce,
	// DefaultCoalesce; 0: every kick wakes it). Set to 0 with BusyPoll.
	// See coalesce.go.
	Coalesce time.Duration
	Buffers  int // frame buffers in the pool (default from MaxClients)

	// GuestMemoryMax is the most guest memory one vhost-user connection
	// may have the switch map, in bytes of mappings (default 1 TiB);
	// UserGuestMemory the most all of one user's connections may (default
	// a quarter of GuestMemoryTotal, at least GuestMemoryMax), and
	// GuestMemoryTotal the most all guests may (default 64 TiB, half of
	// x86-64's address space). A table over one of them closes its guest
	// before anything is mapped (guestmem.go).
	GuestMemoryMax, UserGuestMemory, GuestMemoryTotal uint64
	// GuestFds is the most file descriptors all vhost-user guests may
	// have the switch hold together (0: not counted), at least
	// GuestFdsEach for each of MaxClients, which every guest may hold; a
	// guest whose request would take more than what is left beyond is
	// closed (guestfds.go).
	GuestFds int

	Logger *slog.Logger
}

const (
	defaultMaxClients = 1024
	defaultQueueLen   = 256
	defaultBatch      = 32
	// defaultLargeBuffers: a TAP read batch of superframes, or a guest's.
	defaultLargeBuffers = 32
	sweepInterval       = time.Second
	// The pool's guarantee. Let a read be the most frames one read may
	// bring (readMax: a batch, or a TAP superframe's segments). While free
	// buffers are fewer than max(pressureBacklog, a read) per live port
	// plus poolReserve reads, a port whose kernel pushed back
	// (write-blocked) and already has pressureBacklog frames queued gets
	// no more (pool-pressure drops). A port that is not blocked gains at
	// most a read before it is flushed, so from then on each port adds at
	// most that many buffers: however many clients are stuck (paused VMs
	// do not read) the pool keeps poolReserve reads free and the switch
	// keeps reading, and a client that keeps up never loses a frame to
	// pressure.
	pressureBacklog = 16
	poolReserve     = 4
	// Client sockets get a larger send buffer so a briefly slow VM absorbs
	// a burst in the kernel rather than in our queue (the kernel doubles it).
	clientSndbuf      = 512 << 10
	maxAcceptsPerWake = 64
	// Monitors (vknetctl monitor, vknetd -c is an ordinary client) get
	// port numbers of their own beyond the clients'.
	maxMonitors = 16
)

// Engine is the switch's shared state: what every loop reads and the
// tables they share. The loops (loop.go) own the ports and move the
// frames. Create it with New, run it with Run in one goroutine, and talk
// to it from others only through Stop, Stats, FlushMACs, the listings and
// AttachMonitor.
type Engine struct {
	cfg Config
	log *slog.Logger
	// clientLog brakes every line a client can trigger (connects, refusals,
	// drops), so a client looping on them cannot flood the log.
	clientLog *ratelog.Logger
	pool      *ring.Pool
	macs      *mactable.Table
	policy    *secure.Policy
	secure    bool
	leases    bool // --ip-source dhcp: the TAP's DHCP replies are read (leases.go)
	maxFrame  int
	readMax   int // the most frames one read may bring; the pool's guarantee counts with it

	ports     *portTable        // ids and counts (ports.go)
	users     *userTable        // users with clients connected (users.go)
	guestMem  guestMemoryBudget // what vhost-user guests map (guestmem.go)
	guestFds  guestFdBudget     // the fds vhost-user guests hold (guestfds.go)
	listeners []listenerState   // polled by the first loop (accept.go)

	// loops are the event loops (--workers); the first one also serves
	// the listeners, the TAP, monitors, datagram clients and control
	// requests, and ages the tables.
	loops []*loop
	// mirrored counts the first loop's mirrors, for the others: they hand
	// it their frames for them.
	mirrored atomic.Int32
	// notes tell a supervisor of clients made and closed (supervise.go).
	notes portNotes

	// remote is when each MAC on the host's side last spoke, and macMoves
	// counts MACs that moved to a new port with their VM (migrate.go):
	// any loop may move a MAC, so both are safe for all of them.
	remote   *remoteHeard
	macMoves atomic.Uint64
	moves    chan struct{} // MACMoved

	// parkMu is held by whoever parks the loops: a loop spreading or
	// gathering a port's queue pairs, or an upgrade freezing them
	// (spread.go). parks, spreads and gathers count those, for tests.
	parkMu                  sync.Mutex
	parks, spreads, gathers atomic.Uint64
	// spreadPorts are the ports whose queue pairs are spread, every
	// loop's: a loop changes it only while the others are parked, so
	// any loop reads it (floodSpread).
	spreadPorts []*port

	start time.Time
	done  chan struct{} // closed when Run returns
}

// New checks cfg and allocates everything the loop will ever use.
func New(cfg Config) (*Engine, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	maxFrame := cfg.MTU + 18
	// One spare byte and more show an oversize message as longer than
	// maxFrame instead of silently truncating it to fit.
	bufSize := (maxFrame + 64) &^ 63
	large := 0
	if cfg.TapVnetHdr || cfg.Offloads {
		large = cfg.LargeBuffers
	}
	pool, err := ring.NewPoolWithLarge(cfg.Buffers, bufSize, large, (gso.MaxFrameLen+63)&^63)
	if err != nil {
		return nil, err
	}
	macs, err := mactable.New(cfg.MACTable)
	if err != nil {
		pool.Close()
		return nil, err
	}
	e := &Engine{
		cfg:       cfg,
		log:       cfg.Logger,
		clientLog: ratelog.New(cfg.Logger),
		pool:      pool,
		macs:      macs,
		policy:    cfg.Policy,
		secure:    cfg.Policy.Secure(),
		leases:    cfg.Policy.Leases(),
		maxFrame:  maxFrame,
		readMax:   cfg.readMax(),
		ports:     newPortTable(cfg.MACTable.MaxPorts),
		users:     newUserTable(cfg.MACTable.MaxPorts),
		guestMem:  guestMemoryBudget{perGuest: cfg.GuestMemoryMax, perUser: cfg.UserGuestMemory, total: cfg.GuestMemoryTotal},
		guestFds:  newGuestFdBudget(cfg.GuestFds, cfg.MaxClients),
		start:     time.Now(),
		remote:    newRemoteHeard(),
		moves:     make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	for i, view := range pool.Share(cfg.Workers) {
		l, err := newLoop(e, i, view)
		if err != nil {
			e.closePollers()
			pool.Close()
			return nil, err
		}
		e.loops = append(e.loops, l)
	}
	linkLoops(e.loops)
	if cfg.Workers > 1 {
		e.policy.Share()
	}
	if err := e.openFds(); err != nil {
		e.closePollers()
		pool.Close()
		return nil, err
	}
	return e, nil
}

func (e *Engine) closePollers() {
	for _, l := range e.loops {
		l.closePoller()
	}
}

// check fills in cfg's defaults and refuses what cannot work.
func (cfg *Config) check() error {
	if cfg.Policy == nil {
		return errors.New("engine: Config.Policy is required (use a policy with Secure=false for -U)")
	}
	if cfg.MTU < 68 || cfg.MTU > 65535 {
		return fmt.Errorf("--mtu %d is out of range: use 68 to 65535", cfg.MTU)
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = defaultMaxClients
	}
	if cfg.UserClients <= 0 || cfg.UserClients > cfg.MaxClients {
		cfg.UserClients = cfg.MaxClients
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = defaultQueueLen
	}
	if cfg.GuestMemoryTotal == 0 {
		cfg.GuestMemoryTotal = defaultGuestMemoryTotal
	}
	if cfg.GuestMemoryMax == 0 {
		cfg.GuestMemoryMax = min(defaultGuestMemoryMax, cfg.GuestMemoryTotal)
	}
	if cfg.UserGuestMemory == 0 {
		cfg.UserGuestMemory = max(cfg.GuestMemoryTotal/4, cfg.GuestMemoryMax)
	}
	if cfg.GuestMemoryMax > cfg.UserGuestMemory || cfg.UserGuestMemory > cfg.GuestMemoryTotal {
		return fmt.Errorf("--vhost-memory-max %s, --user-vhost-memory %s and --vhost-memory-total %s: each must be at most the next",
			sizeString(cfg.GuestMemoryMax), sizeString(cfg.UserGuestMemory), sizeString(cfg.GuestMemoryTotal))
	}
	if cfg.Batch <= 0 {
		cfg.Batch = defaultBatch
	}
	if cfg.BusyPoll > 0 {
		cfg.Coalesce = 0 // a busy-polling loop polls its rings anyway
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if cfg.Workers > MaxWorkers {
		return fmt.Errorf("--workers %d: at most %d", cfg.Workers, MaxWorkers)
	}
	if (cfg.TapVnetHdr || cfg.Offloads) && cfg.LargeBuffers <= 0 {
		cfg.LargeBuffers = defaultLargeBuffers
	}
	// Below this the guarantee (pressureBacklog) cannot hold. The default
	// adds room for full queues on top; the slab is touched only as it is
	// used.
	readMax := cfg.readMax()
	minBuffers := MaxPorts(cfg.MaxClients)*max(pressureBacklog, readMax) + 2*poolReserve*readMax
	if cfg.Workers > 1 {
		minBuffers += ring.ShareReserve(cfg.Workers) // free buffers cached by workers, unseen by others
	}
	if cfg.Buffers <= 0 {
		cfg.Buffers = 4096 + minBuffers
	}
	cfg.Buffers = max(cfg.Buffers, minBuffers)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DgramIdle <= 0 {
		cfg.DgramIdle = defaultDgramIdle
	}
	cfg.MACTable.MaxPorts = MaxPorts(cfg.MaxClients)
	return nil
}

// readMax is the most frames one read may bring: a batch, a TAP
// superframe's segments, cut in one read, or a vhost-user guest's read.
func (cfg *Config) readMax() int {
	m := cfg.Batch
	if cfg.TapVnetHdr {
		m = max(m, tapReadBudget)
	}
	for _, ln := range cfg.Listeners {
		if ln.Kind == VhostUser {
			m = max(m, vhostReadBudget)
		}
	}
	return m
}

// openFds makes the TAP a port of the first loop and has that loop poll
// the listeners.
func (e *Engine) openFds() error {
	l := e.loops[0]
	if e.cfg.TapFd >= 0 {
		tap := l.openPort(0, newTapTransport(&l.io, e.cfg.TapFd, e.cfg.TapVnetHdr, e.cfg.MTU), e.cfg.TapFd, e.cfg.TapName)
		tap.host = true
		e.macs.SetHostPort(0) // a bridged LAN or other hosts may be behind it
		if err := l.adopt(tap); err != nil {
			return fmt.Errorf("watching TAP %s: %w", e.cfg.TapName, err)
		}
	}
	for i, ln := range e.cfg.Listeners {
		ls, err := e.listen(l, i, ln)
		if err != nil {
			return err
		}
		e.listeners = append(e.listeners, ls)
	}
	return nil
}

// MaxPorts is how many port numbers an engine with maxClients uses: the
// TAP, the clients and the monitors. Per-port tables elsewhere (secure
// mode's bindings) are sized with it.
func MaxPorts(maxClients int) int {
	if maxClients <= 0 {
		maxClients = defaultMaxClients
	}
	return maxClients + 1 + maxMonitors
}

// Run runs the loops until Stop. It returns nil after Stop, having closed
// every client; the TAP and listener fds stay open for the caller to close.
func (e *Engine) Run() error {
	// The buffers are mapped apart from the heap (ring.mapSlab): only the
	// loops touch them, and they are done.
	defer e.pool.Close()
	defer close(e.done)
	var wg sync.WaitGroup
	errs := make([]error, len(e.loops))
	for i, l := range e.loops[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i+1] = l.runLocked()
		}()
	}
	errs[0] = e.loops[0].runLocked()
	// The first loop ends on Stop or an error; the others follow it.
	for _, l := range e.loops[1:] {
		l.do(func() { l.stopping = true })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// runLocked runs a loop on a thread of its own: its poller wait and its
// ports' syscalls stay on one CPU's caches, and its CPU time is its
// thread's (LoopCPU).
func (l *loop) runLocked() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// A vhost-user guest that shrinks a shared memory file after we mapped
	// it makes our next access fault: with this the fault is an error that
	// closes that guest (package vhostuser recovers it), not a crash. It
	// holds for the goroutine that sets it: every loop's.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	if l.e.cfg.Coalesce > 0 {
		defer preciseTimers()()
	}
	return l.run()
}

// MaxWorkers is the most loops --workers may ask for.
const MaxWorkers = 64

// AutoWorkers is --workers auto: one loop per CPU the daemon may run on,
// at most autoWorkersMax (past that the shared tables, not the CPUs,
// bound the switch).
func AutoWorkers() int { return min(runtime.GOMAXPROCS(0), autoWorkersMax) }

const autoWorkersMax = 16
