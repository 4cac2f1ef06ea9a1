// Package engine is the switch: one event loop over non-blocking fds that
// reads frames in batches into a fixed buffer pool, checks them (secure
// mode), learns and looks up MAC addresses, and queues buffer references
// on the destination ports, which are flushed in batches.
//
// Start reading at Run (the loop) and forwardOne (the decision for one
// frame, in forward.go). How frames move on each kind of port is its
// transport (transport.go); the loop never asks which kind a port is.
package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/sys/unix"

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
	Buffers     int           // frame buffers in the pool (default from MaxClients)

	// GuestMemoryMax is the most guest memory one vhost-user connection
	// may have the switch map, in bytes of mappings (default 1 TiB);
	// UserGuestMemory the most all of one user's connections may (default
	// a quarter of GuestMemoryTotal, at least GuestMemoryMax), and
	// GuestMemoryTotal the most all guests may (default 64 TiB, half of
	// x86-64's address space). A table over one of them closes its guest
	// before anything is mapped (guestmem.go).
	GuestMemoryMax, UserGuestMemory, GuestMemoryTotal uint64

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

// Engine is the switch. Create it with New, run it with Run in one
// goroutine, and talk to it from others only through Stop, Stats and
// FlushMACs.
type Engine struct {
	cfg Config
	log *slog.Logger
	// clientLog brakes every line a client can trigger (connects, refusals,
	// drops), so a client looping on them cannot flood the log.
	clientLog *ratelog.Logger
	poll      poller
	pool      *ring.Pool
	macs      *mactable.Table
	policy    *secure.Policy
	check     *secure.Checker
	secure    bool
	leases    bool // --ip-source dhcp: the TAP's DHCP replies are read (leases.go)
	maxFrame  int
	readMax   int // the most frames one read may bring; the pool's guarantee counts with it

	ports   []*port // by id; nil where free. Port 0 is the TAP when there is one.
	live    []*port // every open port, the flood list
	freeIDs []uint32
	dirty   []*port
	clients int

	users         map[int32]*user // by uid: users with clients connected (users.go)
	freeUserSlots []uint32
	guestMem      guestMemoryBudget // what vhost-user guests map (guestmem.go)

	listeners []listenerState
	accepted  uint64
	departed  counters

	events []event
	rxRefs []ring.Ref
	io     portIO     // the pool and batch size every transport works with
	cut    cutScratch // the frame being switched, when it carries offload work (offload.go)
	// superframesCut counts superframes cut for ports without offloads
	// (tests; not in the listings).
	superframesCut uint64

	// round counts the loop's rounds (step); readNext are the ports to be
	// read once more in the next round: they hold frames already read (a
	// stream's buffer, a vhost-user ring that has more) or were reported
	// again in a round that had read them.
	round    uint64
	readNext []*port
	// largeWaiters are ports whose last read stopped for want of a large
	// buffer (readResult.waitsLarge); they are read again once one is free.
	largeWaiters []*port
	mirrors      []*port // monitors that get a copy of every forwarded frame
	monitors     int

	retryPending bool // a port waits for its retry timer (port.retryAt)

	// remote is when each MAC on the host's side last spoke, and macMoves
	// counts MACs that moved to a new port with their VM (migrate.go).
	remote   *remoteHeard
	macMoves uint64
	moves    chan struct{} // MACMoved

	start     time.Time
	now       int64 // nanoseconds since start, read once per loop iteration
	nextSweep int64

	reqs       chan func()
	exited     chan struct{}
	stopping   bool
	wakeMu     sync.Mutex // guards pollClosed against wake-ups from other goroutines
	pollClosed bool
}

type listenerState struct {
	Listener
	pausedUntil int64 // accept paused after EMFILE and the like, with back-off
	backoff     time.Duration
	dgram       *dgramListener // a datagram listener's clients and scratch; nil for the others
	// filterCookie keys the kernel filter's drop counter of a datagram
	// listener; 0 when it has no filter.
	filterCookie uint64
}

// New checks cfg and allocates everything the loop will ever use.
func New(cfg Config) (*Engine, error) {
	if cfg.Policy == nil {
		return nil, errors.New("engine: Config.Policy is required (use a policy with Secure=false for -U)")
	}
	if cfg.MTU < 68 || cfg.MTU > 65535 {
		return nil, fmt.Errorf("--mtu %d is out of range: use 68 to 65535", cfg.MTU)
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
		return nil, fmt.Errorf("--vhost-memory-max %s, --user-vhost-memory %s and --vhost-memory-total %s: each must be at most the next",
			sizeString(cfg.GuestMemoryMax), sizeString(cfg.UserGuestMemory), sizeString(cfg.GuestMemoryTotal))
	}
	if cfg.Batch <= 0 {
		cfg.Batch = defaultBatch
	}
	// Below this the guarantee above cannot hold. The default adds room
	// for full queues on top; the slab is touched only as it is used. A
	// read brings at most readMax frames: a batch, or a TAP superframe's
	// segments, cut in one read.
	readMax := cfg.Batch
	if cfg.TapVnetHdr {
		readMax = max(readMax, tapReadBudget)
	}
	minBuffers := MaxPorts(cfg.MaxClients)*max(pressureBacklog, readMax) + 2*poolReserve*readMax
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
	maxPorts := MaxPorts(cfg.MaxClients)
	cfg.MACTable.MaxPorts = maxPorts

	maxFrame := cfg.MTU + 18
	// One spare byte and more show an oversize message as longer than
	// maxFrame instead of silently truncating it to fit.
	bufSize := (maxFrame + 64) &^ 63
	large := 0
	if cfg.TapVnetHdr || cfg.Offloads {
		if cfg.LargeBuffers <= 0 {
			cfg.LargeBuffers = defaultLargeBuffers
		}
		large = cfg.LargeBuffers
	}
	pool, err := ring.NewPoolWithLarge(cfg.Buffers, bufSize, large, (gso.MaxFrameLen+63)&^63)
	if err != nil {
		return nil, err
	}
	macs, err := mactable.New(cfg.MACTable)
	if err != nil {
		return nil, err
	}
	p, err := newPoller(128)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		cfg:       cfg,
		log:       cfg.Logger,
		clientLog: ratelog.New(cfg.Logger),
		poll:      p,
		pool:      pool,
		macs:      macs,
		policy:    cfg.Policy,
		check:     cfg.Policy.NewChecker(),
		secure:    cfg.Policy.Secure(),
		leases:    cfg.Policy.Leases(),
		maxFrame:  maxFrame,
		readMax:   readMax,
		ports:     make([]*port, maxPorts),
		live:      make([]*port, 0, maxPorts),
		dirty:     make([]*port, 0, maxPorts),
		events:    make([]event, 128),
		rxRefs:    make([]ring.Ref, max(cfg.Batch, maxReadBudget)),
		cut:       newCutScratch(),
		io:        portIO{pool: pool, batch: cfg.Batch},
		start:     time.Now(),
		nextSweep: int64(sweepInterval),
		users:     make(map[int32]*user),
		remote:    newRemoteHeard(),
		moves:     make(chan struct{}, 1),
		guestMem:  guestMemoryBudget{perGuest: cfg.GuestMemoryMax, perUser: cfg.UserGuestMemory, total: cfg.GuestMemoryTotal},
		reqs:      make(chan func(), 16),
		exited:    make(chan struct{}),

		readNext:     make([]*port, 0, 2*maxPorts),
		largeWaiters: make([]*port, 0, maxPorts),
	}
	for id := maxPorts - 1; id >= 1; id-- {
		e.freeIDs = append(e.freeIDs, uint32(id))
		e.freeUserSlots = append(e.freeUserSlots, uint32(id))
	}
	if cfg.TapFd >= 0 {
		tap := e.newPort(0, newTapTransport(&e.io, cfg.TapFd, cfg.TapVnetHdr, cfg.MTU), cfg.TapFd, cfg.TapName)
		tap.host = true
		e.macs.SetHostPort(0) // a bridged LAN or other hosts may be behind it
		if err := e.poll.add(tap.fd, tap.id); err != nil {
			e.poll.close()
			return nil, fmt.Errorf("watching TAP %s: %w", cfg.TapName, err)
		}
	}
	for i, l := range cfg.Listeners {
		if l.Kind == Dgram {
			if err := enableSenderCredentials(l.Fd); err != nil {
				e.poll.close()
				return nil, fmt.Errorf("datagram listener %s: asking for senders' credentials (SO_PASSCRED): %w", l.Path, err)
			}
		}
		if err := e.poll.add(l.Fd, tokenListener-uint32(i)); err != nil {
			e.poll.close()
			return nil, fmt.Errorf("watching listener %s: %w", l.Path, err)
		}
		ls := listenerState{Listener: l, backoff: 50 * time.Millisecond}
		if l.Kind == Dgram {
			ls.dgram = newDgramListener(cfg.Batch)
			ls.filterCookie = e.attachFilter(l.Fd, l.Path)
		}
		e.listeners = append(e.listeners, ls)
	}
	return e, nil
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

// mayQueue applies the pool's guarantee (see pressureBacklog) to one more
// frame for out.
func (e *Engine) mayQueue(out *port) bool {
	blocked := out.writeArmed || out.retryAt != 0
	if !blocked || out.txq.Len() < pressureBacklog {
		return true
	}
	return e.pool.Free() >= max(pressureBacklog, e.readMax)*len(e.live)+poolReserve*e.readMax
}

func (e *Engine) newPort(id uint32, t transport, fd int, name string) *port {
	p := &port{id: id, t: t, caps: t.caps(), fd: fd, name: name, pid: -1, uid: -1, txq: ring.NewQueue(e.cfg.QueueLen)}
	for i := range p.watched {
		p.watched[i] = -1
	}
	if p.caps.readBudget <= 0 {
		p.caps.readBudget = e.cfg.Batch
	}
	p.caps.readBudget = min(p.caps.readBudget, maxReadBudget)
	p.offloads = p.caps.offloads
	e.ports[id] = p
	e.live = append(e.live, p)
	return p
}

// Run is the event loop. It returns nil after Stop, having closed every
// client; the TAP and listener fds stay open for the caller to close.
func (e *Engine) Run() error {
	defer close(e.exited)
	// The buffers are mapped apart from the heap (ring.mapSlab): only the
	// loop touches them, and it is done.
	defer e.pool.Close()
	// A vhost-user guest that shrinks a shared memory file after we mapped
	// it makes our next access fault: with this the fault is an error that
	// closes that guest (package vhostuser recovers it), not a crash.
	debug.SetPanicOnFault(true)
	e.now = int64(time.Since(e.start))
	e.nextSweep = e.now + int64(sweepInterval)
	for !e.stopping {
		if _, err := e.step(e.timeoutMs()); err != nil {
			e.shutdown()
			return err
		}
	}
	e.shutdown()
	return nil
}

// step is one round of the loop: wait for readiness (up to timeoutMs),
// then serve every port that is ready. It returns how many readiness
// reports it served: with none, and nothing carried (hasWork), the
// switch is idle. Run calls it until Stop; tests call it with timeout 0
// until idle, so they run the loop itself, not a copy.
//
// Fairness: in one round a port is read at most once, one batch (Batch
// frames; the TAP up to maxReadBudget, a superframe's segments), however
// many frames it offers and however many of its fds were reported. A port
// that still holds frames afterwards (a stream's buffer, a vhost-user ring
// with more, a second report of the same round) is read again in the next
// round, in turn with the others, never before them. So a port offering 100
// times the frames of the others delays their frames by at most one round:
// its one batch. Ports whose fds the kernel reports ready are served in the
// order epoll reports them, and level-triggered epoll puts a reported fd at
// the end of its ready list, so no port is passed over for two rounds.
// Datagram clients share their listener's socket: the kernel queues their
// frames together, and one batch per round is read for all of them.
func (e *Engine) step(timeoutMs int) (reports int, err error) {
	n, err := e.poll.wait(e.events, timeoutMs)
	if err != nil {
		return 0, err
	}
	e.now = int64(time.Since(e.start))
	carried := e.beginRound()
	for _, ev := range e.events[:n] {
		e.dispatch(ev)
	}
	e.receiveCarried(carried)
	if len(e.largeWaiters) > 0 && e.pool.FreeLarge() > 0 {
		e.receiveLargeWaiters()
	}
	if e.retryPending {
		e.retryPending = false
		e.retryPorts()
	}
	e.reap()
	e.resumeListeners()
	if e.now >= e.nextSweep {
		e.sweep()
	}
	return n, nil
}

func (e *Engine) dispatch(ev event) {
	switch {
	case ev.token == tokenWake:
		e.poll.drainWake()
		e.serveRequests()
	case ev.token > tokenListener-uint32(len(e.listeners)) && ev.token <= tokenListener:
		l := &e.listeners[tokenListener-ev.token]
		if l.Kind == Dgram {
			e.receiveDgram(l)
		} else {
			e.accept(l)
		}
	default:
		id, sub := splitToken(ev.token)
		p := e.ports[id]
		if p == nil || p.dead {
			return
		}
		if p.caps.eventSource {
			e.sourceEvent(p, sub, ev)
			return
		}
		if ev.hangup {
			p.hangup = true
		}
		if ev.writable {
			e.transmit(p)
		}
		if ev.readable {
			e.serve(p)
		} else if ev.hangup {
			e.kill(p, nil)
		}
	}
}

// serve reads p in this round, or, if p had its read in this round
// already, in the next one (see step).
func (e *Engine) serve(p *port) {
	if p.readRound == e.round {
		e.readNextRound(p)
		return
	}
	e.receive(p)
}

// readNextRound queues p for one read in the next round, once.
func (e *Engine) readNextRound(p *port) {
	if !p.readAgain {
		p.readAgain = true
		e.readNext = append(e.readNext, p)
	}
}

// receive reads one batch from p, forwards it, and flushes every port the
// batch queued frames on. A port that holds frames it has read already
// (readResult.buffered) is read again in the next round (step).
func (e *Engine) receive(p *port) {
	p.readRound, p.readAgain = e.round, false
	refs := e.takeBuffers(p.caps.readBudget)
	if len(refs) == 0 {
		p.cnt.drops[DropNoBuffer]++
		return
	}
	res := e.read(p, refs)
	e.releaseBuffers(refs[res.n:])
	e.forward(p, refs[:res.n])
	e.flush()
	if res.err != nil {
		e.kill(p, res.err)
		return
	}
	if res.buffered {
		e.readNextRound(p)
	}
	if res.waitsLarge {
		e.waitForLarge(p)
	}
}

// waitForLarge queues p, once, to be read when a large buffer is free.
func (e *Engine) waitForLarge(p *port) {
	if !p.waitsLarge {
		p.waitsLarge = true
		e.largeWaiters = append(e.largeWaiters, p)
	}
}

// receiveLargeWaiters reads again, one batch each, the ports that waited
// for a large buffer, now that one is free: the frames that wait are
// superframes, and reading frees no large buffer, so they waited for the
// writes of this loop iteration. A port read in this round already waits
// for the next one (step).
func (e *Engine) receiveLargeWaiters() {
	n := len(e.largeWaiters)
	for i := 0; i < n; i++ {
		p := e.largeWaiters[i]
		p.waitsLarge = false
		switch {
		case p.dead:
		case p.readRound == e.round:
			e.waitForLarge(p)
		default:
			e.receive(p) // may append p again, after n
		}
	}
	e.largeWaiters = append(e.largeWaiters[:0], e.largeWaiters[n:]...)
}

// takeBuffers takes up to budget free buffers to read into (a batch, or
// a transport's readBudget); what a read leaves unused goes back with
// releaseBuffers.
func (e *Engine) takeBuffers(budget int) []ring.Ref {
	refs := e.rxRefs[:min(budget, len(e.rxRefs), e.pool.Free())]
	for i := range refs {
		refs[i], _ = e.pool.Get()
	}
	return refs
}

func (e *Engine) releaseBuffers(refs []ring.Ref) {
	for _, r := range refs {
		e.pool.Release(r)
	}
}

// beginRound starts a round of the loop and says how many ports wait
// in readNext from earlier rounds: the ones receiveCarried serves.
func (e *Engine) beginRound() (carried int) {
	e.round++
	return len(e.readNext)
}

// receiveCarried gives the first carried ports of readNext their read of
// this round, unless they had it already (a poll report came first: that
// read queued them again if they still hold frames). Ports queued during
// this round stay for the next one.
func (e *Engine) receiveCarried(carried int) {
	for _, p := range e.readNext[:carried] {
		if p.dead || !p.readAgain || p.readRound == e.round {
			continue
		}
		e.receive(p)
	}
	e.readNext = append(e.readNext[:0], e.readNext[carried:]...)
}

// flush transmits on every port that got frames during the last batch.
func (e *Engine) flush() {
	for _, p := range e.dirty {
		p.dirty = false
		if p.dead {
			continue
		}
		// A port waiting for write readiness is left to the poller: trying
		// again would cost a syscall that fails. A transport that learns
		// of room by other means (vhost-user: its ring in shared memory) is
		// tried anyway, for free: its peer may have made room before the
		// poller says so, and the frames just queued would otherwise fill
		// the queue meanwhile.
		if !p.writeArmed || p.caps.writeReadyElsewhere {
			e.transmit(p)
		}
	}
	e.dirty = e.dirty[:0]
}

// transmit sends p's queue until it is empty or the kernel pushes back;
// then write readiness is armed and the rest waits in the queue.
func (e *Engine) transmit(p *port) {
	for p.txq.Len() > 0 {
		res := p.t.write(txView{&p.txq})
		p.retire(e.pool, &res)
		if res.rerouted {
			e.rerouted(p)
		}
		switch {
		case res.err != nil && peerGone(res.err):
			e.sendingStopped(p)
			return
		case res.err != nil:
			e.kill(p, res.err)
			return
		case res.retryAfter > 0:
			p.retryAt = e.now + int64(res.retryAfter)
			e.retryPending = true
			return
		case res.blocked:
			if !p.writeArmed {
				p.writeArmed = true
				if err := e.waitWritable(p, true); err != nil {
					e.kill(p, err)
				}
			}
			return
		}
	}
	if p.writeArmed {
		p.writeArmed = false
		if err := e.waitWritable(p, false); err != nil {
			e.kill(p, err)
		}
	}
}

// rerouted forgets p's fd, which its transport closed: it reaches its
// peer another way from now on (a datagram client answered through its
// listener).
func (e *Engine) rerouted(p *port) {
	p.fd = -1
	p.writeArmed = false
	e.clientLog.Info("datagram client takes frames only from the listener's address; answering through it",
		"port", p.id, "client", p.name)
}

// waitWritable asks to be told (or no longer) when p can take frames
// again: write readiness on its fd, unless its transport learns it
// otherwise.
func (e *Engine) waitWritable(p *port, on bool) error {
	if p.caps.writeReadyElsewhere {
		return nil
	}
	return e.poll.setWrite(p.fd, p.id, on)
}

// sourceEvent serves a port whose transport polls fds of its own: the
// transport says what the readiness of fd sub means.
func (e *Engine) sourceEvent(p *port, sub uint8, ev event) {
	r := p.t.ready(sub, ev.hangup)
	p.cnt.count(&r.dropped)
	if r.err == nil && r.watchChanged {
		r.err = e.watch(p, &r.watch)
	}
	if r.err != nil {
		e.kill(p, r.err)
		return
	}
	if r.offloadsKnown {
		p.offloads = r.offloads
	}
	if r.stateKnown {
		p.stopped = r.stopped
	}
	if r.write && !p.txClosed {
		e.transmit(p)
	}
	if r.read {
		e.serve(p)
	}
}

// watch polls the fds p's transport wants polled besides its own (fds[i]
// reported as sub i+1), in place of those it wanted before. Each earlier
// one is taken out first, and a failure to is no matter: the transport
// closes an fd it no longer wants, which takes it out of epoll, and the
// number may already be a new fd's that is not polled yet. So a number
// that comes back is always polled anew, never taken for the old fd.
func (e *Engine) watch(p *port, fds *[maxSubFDs]int) error {
	for i, fd := range fds {
		if old := p.watched[i]; old >= 0 {
			e.poll.remove(old)
		}
		p.watched[i] = -1
		if fd < 0 {
			continue
		}
		if err := e.poll.add(fd, subToken(p.id, uint8(i+1))); err != nil {
			return fmt.Errorf("polling the %s port's fd %d: %w", p.caps.kind, fd, err)
		}
		p.watched[i] = fd
	}
	return nil
}

// sendingStopped handles a client whose peer is gone on the sending side
// (EPIPE, ECONNRESET) while frames it sent before closing may still wait
// in our receive queue: closing now would lose them. Its queue is dropped
// and nothing more is queued for it; the poller keeps reporting it
// readable until reading reaches end of stream, which closes it.
func (e *Engine) sendingStopped(p *port) {
	p.txClosed = true
	e.dropQueue(p)
	if p.writeArmed {
		p.writeArmed = false
		if err := e.waitWritable(p, false); err != nil {
			e.kill(p, err)
		}
	}
}

// dropQueue discards what waits for p, counted as port-closed.
func (e *Engine) dropQueue(p *port) {
	for p.txq.Len() > 0 {
		e.pool.Release(p.txq.At(0))
		p.txq.Drop(1)
		p.cnt.drops[DropPortClosed]++
	}
}

// peerGone: errors after which a connected client's peer cannot take more
// frames, though what it sent before may still be readable.
func peerGone(err error) bool {
	return errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET)
}

// kill marks a port for closing at the end of the loop iteration, so no
// port id is reused while a batch may still refer to it.
func (e *Engine) kill(p *port, err error) {
	if p.dead {
		return
	}
	p.dead = true
	if p.host {
		// The TAP only fails when its device went away; the switch goes on
		// between its clients, and the operator hears about it.
		e.log.Error("TAP port failed, clients keep switching among themselves", "tap", p.name, "err", err)
		return
	}
	// A peer that hangs up with frames still unread is reset, not an error.
	if err != nil && !errors.Is(err, errPeerClosed) && !peerGone(err) {
		args := []any{"port", p.id, "client", p.name, "err", err}
		if hint := refusalHint(err); hint != "" {
			args = append(args, "hint", hint)
		}
		e.clientLog.Warn("client closed after error", args...)
	} else {
		e.clientLog.Info("client disconnected", "port", p.id, "client", p.name)
	}
}

// reap closes the ports killed during this iteration and forgets their
// MACs and address bindings at once.
func (e *Engine) reap() {
	for i := 0; i < len(e.live); i++ {
		p := e.live[i]
		if !p.dead {
			continue
		}
		e.close(p)
		e.live = append(e.live[:i], e.live[i+1:]...)
		i--
	}
}

func (e *Engine) close(p *port) {
	if p.fd >= 0 {
		e.poll.remove(p.fd)
	}
	e.dropQueue(p)
	e.macs.RemovePort(p.id)
	e.leaveUser(p)
	e.policy.RemovePort(p.id)
	e.ports[p.id] = nil
	p.t.close()
	if p.dgram != nil {
		p.dgram.forget(p)
	}
	if p.host {
		return
	}
	e.freeIDs = append(e.freeIDs, p.id)
	if p.observer {
		e.monitors--
		for i, m := range e.mirrors {
			if m == p {
				e.mirrors = append(e.mirrors[:i], e.mirrors[i+1:]...)
				break
			}
		}
		return
	}
	e.forgetFilter(p)
	e.departed.add(&p.cnt)
	e.clients--
}

// read reads a batch from p through its transport and counts what the
// transport dropped.
func (e *Engine) read(p *port, refs []ring.Ref) readResult {
	res := p.t.read(refs, p.hangup || p.txClosed)
	p.cnt.count(&res.dropped)
	if res.n == 0 && errors.Is(res.err, unix.ECONNRESET) {
		// A SEQPACKET peer that closed with our frames unread leaves
		// ECONNRESET on our socket, reported (once) before the messages
		// it sent earlier: the client hung up, and those are still ours.
		p.hangup = true
		res = p.t.read(refs, true)
		p.cnt.count(&res.dropped)
	}
	return res
}

// retryPorts sends to ports whose retry time has come.
func (e *Engine) retryPorts() {
	for _, p := range e.live {
		if p.retryAt == 0 || p.dead {
			continue
		}
		if e.now < p.retryAt {
			e.retryPending = true // not yet: keep the timer running
			continue
		}
		p.retryAt = 0
		e.transmit(p)
	}
}

// sweep ages the MAC table and the secure-mode bindings.
func (e *Engine) sweep() {
	e.expireDgram()
	e.macs.Expire(e.now)
	e.policy.Expire(e.now)
	e.nextSweep = e.now + int64(sweepInterval)
}

func (e *Engine) timeoutMs() int {
	next := e.nextSweep
	for i := range e.listeners {
		if u := e.listeners[i].pausedUntil; u != 0 && u < next {
			next = u
		}
	}
	if e.hasWork() {
		return 0
	}
	if e.retryPending && e.now+int64(dgramRetry) < next {
		next = e.now + int64(dgramRetry)
	}
	ms := (next - e.now + int64(time.Millisecond) - 1) / int64(time.Millisecond)
	if ms < 0 {
		ms = 0
	}
	return int(ms)
}

// hasWork: the next round has ports to read without waiting for the
// poller (carried from this one, or waiting for a large buffer now free).
func (e *Engine) hasWork() bool {
	return len(e.readNext) > 0 || len(e.largeWaiters) > 0 && e.pool.FreeLarge() > 0
}

// shutdown closes every client; queued frames are counted as port-closed.
func (e *Engine) shutdown() {
	for _, p := range e.live {
		if !p.host {
			p.dead = true
		}
	}
	e.reap()
	e.closePoller()
	e.serveRequests()
}

func (e *Engine) closePoller() {
	e.wakeMu.Lock()
	defer e.wakeMu.Unlock()
	if !e.pollClosed {
		e.pollClosed = true
		e.poll.close()
	}
}
