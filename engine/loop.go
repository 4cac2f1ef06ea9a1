package engine

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/ring"
	"github.com/vknetd/vknetd/secure"
)

// loop is one event loop: a poller, the ports it owns, and the scratch
// for moving their frames. Only its goroutine touches its ports and their
// counters; what it shares with other loops is the Engine (the tables,
// the pool). Its round is step; serve, receive, flush and transmit are
// the steps of a frame's way in and out.
type loop struct {
	e     *Engine
	index int
	poll  poller
	// live are the ports this loop owns, the flood list; mirrors the
	// monitors among them that get a copy of every forwarded frame.
	live    []*port
	mirrors []*port
	// departed totals the clients this loop closed.
	departed counters
	// nports is len(live), for the other loops: accept gives a new client
	// to the loop with the fewest.
	nports atomic.Int32
	// cross are the rings to and from the other loops (crossloop.go).
	cross crossLinks
	// inbox are ports the first loop opened for this one, to adopt.
	inboxMu sync.Mutex
	inbox   []posted

	pool   *ring.Pool
	io     portIO          // the pool and batch size every transport of this loop works with
	check  *secure.Checker // this loop's secure-mode decoder and verdict
	cut    cutScratch      // the frame being switched, when it carries offload work (offload.go)
	events []event
	rxRefs []ring.Ref
	dirty  []*port // ports given frames during the batch being switched
	// handedOff: handOver gave the frame being switched, its read's
	// reference, to another loop (releaseRead).
	handedOff bool
	// The frame being switched is the slot-th of its read; split says its
	// rest is still in its sender's memory (direct.go).
	slot   int
	split  bool
	warmed int // what warm loaded (crossloop.go)

	// round counts the loop's rounds (step); readNext are the ports to be
	// read once more in the next round: they hold frames already read (a
	// stream's buffer, a vhost-user ring that has more) or were reported
	// again in a round that had read them.
	round    uint64
	readNext []*port
	// largeWaiters are ports whose last read stopped for want of a large
	// buffer (readResult.waitsLarge); they are read again once one is free.
	largeWaiters []*port
	retryPending bool // a port waits for its retry timer (port.retryAt)

	now       int64 // nanoseconds since the engine's start, read once per round
	nextSweep int64

	// moved counts frames read and written, so a round knows it moved
	// some. With Config.BusyPoll, busyUntil is when the loop stops
	// polling (the last round that moved frames, plus BusyPoll); polling
	// says its ports were told it polls; spins counts rounds since it
	// last asked the poller (busypoll.go). Frames moved by ports without
	// rings alone start no polling.
	moved     uint64
	busyUntil int64
	polling   bool
	spins     int
	// ringPorts counts the live ports with rings to poll: a loop
	// without any has nothing to busy-poll, and sleeps as usual.
	ringPorts int
	// With Config.Coalesce (coalesce.go): ringMoved counts the frames
	// read from ports with rings, sleptAt is ringMoved when the loop last
	// went to sleep, ringMovedAt when it last saw ringMoved grow. A
	// coalescing loop is one that polls (polling) without BusyPoll.
	ringMoved   uint64
	sleptAt     uint64
	ringMovedAt int64

	// handles are the queue handles l serves for ports of other loops
	// (spread.go); spreadFailed says one of l's spread ports has a handle
	// that failed; nextSpreadCheck is when l looks for ports to spread.
	handles         []*port
	spreadFailed    atomic.Bool
	nextSpreadCheck int64

	// Control requests from other goroutines (control.go).
	reqs       chan func()
	exited     chan struct{}
	stopping   bool
	wakeMu     sync.Mutex // guards pollClosed against wake-ups from other goroutines
	pollClosed bool

	// written are the ports deliverSplit wrote to in this batch; failed
	// what a sender's transport counted when its memory failed (direct.go).
	// Last: failed is large and rarely touched.
	written []*port
	failed  tally
}

func newLoop(e *Engine, index int, pool *ring.Pool) (*loop, error) {
	p, err := newPoller(128)
	if err != nil {
		return nil, err
	}
	maxPorts := len(e.ports.byID)
	l := &loop{
		e:            e,
		index:        index,
		poll:         p,
		live:         make([]*port, 0, maxPorts),
		pool:         pool,
		check:        e.policy.NewChecker(),
		cut:          newCutScratch(),
		events:       make([]event, 128),
		rxRefs:       make([]ring.Ref, max(e.cfg.Batch, maxReadBudget)),
		dirty:        make([]*port, 0, maxPorts),
		written:      make([]*port, 0, maxPorts),
		readNext:     make([]*port, 0, 2*maxPorts),
		largeWaiters: make([]*port, 0, maxPorts),
		nextSweep:    int64(sweepInterval),
		reqs:         make(chan func(), 16),
		exited:       make(chan struct{}),
	}
	l.io = newPortIO(l.pool, e.cfg.Batch)
	return l, nil
}

// run is the loop until Stop: rounds, then every port closed.
func (l *loop) run() error {
	defer close(l.exited)
	l.now = int64(time.Since(l.e.start))
	l.nextSweep = l.now + int64(sweepInterval)
	l.flush() // frames an adopted state carried over (handover.go)
	for !l.stopping {
		timeout := l.timeout()
		if timeout != 0 && l.e.cfg.BusyPoll > 0 {
			if l.now < l.busyUntil {
				if err := l.spin(); err != nil {
					l.shutdown()
					return err
				}
				continue
			}
			if l.polling {
				l.stopPolling() // may find frames: then the timeout is 0
				continue
			}
		}
		if timeout != 0 && l.e.cfg.Coalesce > 0 {
			var again bool
			if timeout, again = l.coalesce(timeout); again {
				continue
			}
		}
		if _, err := l.step(l.sleep(timeout)); err != nil {
			l.shutdown()
			return err
		}
	}
	l.shutdown()
	return nil
}

// step is one round of the loop: wait for readiness (up to timeout),
// then serve every port that is ready. It returns how many readiness
// reports it served: with none, and nothing carried (hasWork), the
// loop is idle. run calls it until Stop; tests call it with timeout 0
// until idle, so they run the loop itself, not a copy.
//
// Fairness: in one round a port is read at most once, one batch (Batch
// frames; the TAP up to maxReadBudget, a superframe's segments; a
// vhost-user guest vhostReadBudget, its rings' trips), however
// many frames it offers and however many of its fds were reported. A port
// that still holds frames afterwards (a stream's buffer, a vhost-user ring
// with more, a second report of the same round) is read again in the next
// round, in turn with the others, never before them. So a port offering 100
// times the frames of the others delays their frames by at most one round:
// its one batch. Ports whose fds the kernel reports ready are served in the
// order epoll reports them, and level-triggered epoll puts a reported fd at
// the end of its ready list, so no port is passed over for two rounds.
// When the poll reports nothing and ports are carried, the step goes on
// with more rounds of those alone, up to pollMoved frames moved or
// pollRounds rounds: a port whose fd becomes ready meanwhile waits that
// long for the next poll.
// Datagram clients share their listener's socket: the kernel queues their
// frames together, and one batch per round is read for all of them.
func (l *loop) step(timeout time.Duration) (reports int, err error) {
	n, err := l.poll.wait(l.events, timeout)
	if err != nil {
		return 0, err
	}
	start := l.moved
	l.serveRound(l.events[:n])
	// A poll that reported nothing while ports wait to be read again (a
	// busy vhost-user ring, which its guest does not kick) is followed by
	// rounds that only read those, until they have moved pollMoved frames
	// (read and written) or run pollRounds rounds: on a loop with few busy
	// ports epoll_wait, a syscall per round, would otherwise cost as much
	// as the frames. The bound is in frames, not rounds, so a loop with
	// one busy port (a worker's share of them) polls as often per frame
	// as one with several: counted in rounds, 2 workers paid twice the
	// epoll_waits per frame of 1 (BenchmarkWorkers). A port whose fd
	// becomes ready meanwhile waits for those frames, not one round; when
	// the poll reports any fd, the round is the only one, as before.
	for rounds := 1; n == 0 && rounds < pollRounds && l.moved-start < pollMoved && len(l.readNext) > 0 && !l.stopping; rounds++ {
		l.serveRound(nil)
	}
	return n, nil
}

// pollMoved and pollRounds bound what a step does between two polls while
// ports are carried and no fd is ready: 512 frames read and written, as
// 4 rounds of 2 busy ports at the default batch of 32, or 16 rounds of
// ports that move few.
const (
	pollMoved  = 512
	pollRounds = 16
)

// serveRound is one round: the readiness reports of the round's poll
// (none in a round without a poll), the frames other loops handed over,
// the ports carried from the last round, and the round's upkeep; a
// busy-polling loop (busypoll.go) also looks at its ports' rings, and runs
// rounds without asking the poller at all.
func (l *loop) serveRound(events []event) {
	l.now = int64(time.Since(l.e.start))
	moved := l.moved
	l.round++
	carried := len(l.readNext)
	if l.cross.from != nil && l.cross.sleeping.Load() {
		// Stored only when set: the other loops load the flag at every
		// publish, and a store each round took their copy of its line
		// from them (a cache miss per batch handed over).
		l.cross.sleeping.Store(false)
	}
	for _, ev := range events {
		l.dispatch(ev)
	}
	if l.polling {
		l.pollRings()
	}
	if l.cross.from != nil {
		l.receiveCross()
	}
	l.receiveCarried(carried)
	if len(l.largeWaiters) > 0 && l.pool.FreeLarge() > 0 {
		l.receiveLargeWaiters()
	}
	if l.retryPending {
		l.retryPending = false
		l.retryPorts()
	}
	if l.spreadFailed.Load() {
		l.closeFailedSpread()
	}
	if len(l.e.loops) > 1 && l.now >= l.nextSpreadCheck {
		l.checkSpread()
	}
	l.reap()
	l.e.deliverNotes() // to the supervisor, if any
	if l.index == 0 {
		l.resumeListeners()
	}
	if l.now >= l.nextSweep {
		l.sweep()
	}
	if l.moved != moved && l.e.cfg.BusyPoll > 0 && l.ringPorts > 0 {
		l.busyUntil = l.now + int64(l.e.cfg.BusyPoll)
	}
}

func (l *loop) dispatch(ev event) {
	e := l.e
	switch {
	case ev.token == tokenWake:
		l.poll.drainWake()
		l.adoptInbox()
		l.serveRequests()
	case ev.token > tokenListener-uint32(len(e.listeners)) && ev.token <= tokenListener:
		ls := &e.listeners[tokenListener-ev.token]
		if ls.Kind == Dgram {
			l.receiveDgram(ls)
		} else {
			l.accept(ls)
		}
	default:
		id, sub := splitToken(ev.token)
		p := e.ports.get(id)
		if p == nil {
			return
		}
		if p.loop != l {
			// A kick of a ring whose pair l serves for p's loop, or one
			// reported just before its pairs came back (spread.go).
			if p.spread == nil {
				return
			}
			if p = p.spread.handleOn(l); p == nil {
				return
			}
		}
		if p.dead {
			return
		}
		if p.caps.eventSource {
			l.sourceEvent(p, sub, ev)
			return
		}
		if ev.hangup {
			p.hangup = true
			p.left.closing.Store(true)
		}
		if ev.writable {
			l.transmit(p)
		}
		if ev.readable {
			l.serve(p)
		} else if ev.hangup {
			l.kill(p, nil)
		}
	}
}

// serve reads p in this round, or, if p had its read in this round
// already, in the next one (see step).
func (l *loop) serve(p *port) {
	if p.readRound == l.round {
		l.readNextRound(p)
		return
	}
	l.receive(p)
}

// readNextRound queues p for one read in the next round, once.
func (l *loop) readNextRound(p *port) {
	if !p.readAgain {
		p.readAgain = true
		l.readNext = append(l.readNext, p)
	}
}

// receive reads one batch from p, forwards it, and flushes every port the
// batch queued frames on. A port that holds frames it has read already
// (readResult.buffered) is read again in the next round (step).
func (l *loop) receive(p *port) {
	if l.cross.to != nil && !l.crossRoom() {
		p.readAgain = false // it may be the carried entry being served
		l.readNextRound(p)  // back-pressure (crossRingLen)
		return
	}
	p.readRound, p.readAgain = l.round, false
	refs := l.takeBuffers(p.caps.readBudget)
	if len(refs) == 0 {
		p.cnt.drops[DropNoBuffer]++
		return
	}
	res := l.read(p, refs)
	l.moved += uint64(res.n)
	if p.caps.rings != nil {
		l.ringMoved += uint64(res.n)
	}
	l.releaseBuffers(refs[res.n:])
	l.forward(p, refs[:res.n])
	if p.caps.direct != nil {
		l.endWrites()
		p.caps.direct.releaseRead() // the rests are copied
	}
	l.flush()
	if res.err != nil {
		l.kill(p, res.err)
		return
	}
	if res.buffered {
		l.readNextRound(p)
	}
	if res.waitsLarge {
		l.waitForLarge(p)
	}
}

// read reads a batch from p through its transport and counts what the
// transport dropped.
func (l *loop) read(p *port, refs []ring.Ref) readResult {
	res := p.t.read(refs, p.hangup || p.txClosed)
	p.cnt.count(&res.dropped)
	if res.n == 0 && errors.Is(res.err, unix.ECONNRESET) {
		// A SEQPACKET peer that closed with our frames unread leaves
		// ECONNRESET on our socket, reported (once) before the messages
		// it sent earlier: the client hung up, and those are still ours.
		p.hangup = true
		p.left.closing.Store(true)
		res = p.t.read(refs, true)
		p.cnt.count(&res.dropped)
	}
	return res
}

// waitForLarge queues p, once, to be read when a large buffer is free.
func (l *loop) waitForLarge(p *port) {
	if !p.waitsLarge {
		p.waitsLarge = true
		l.largeWaiters = append(l.largeWaiters, p)
	}
}

// receiveLargeWaiters reads again, one batch each, the ports that waited
// for a large buffer, now that one is free: the frames that wait are
// superframes, and reading frees no large buffer, so they waited for the
// writes of this round. A port read in this round already waits for the
// next one (step).
func (l *loop) receiveLargeWaiters() {
	n := len(l.largeWaiters)
	for i := 0; i < n; i++ {
		p := l.largeWaiters[i]
		p.waitsLarge = false
		switch {
		case p.dead:
		case p.readRound == l.round:
			l.waitForLarge(p)
		default:
			l.receive(p) // may append p again, after n
		}
	}
	l.largeWaiters = append(l.largeWaiters[:0], l.largeWaiters[n:]...)
}

// takeBuffers takes up to budget free buffers to read into (a batch, or
// a transport's readBudget); what a read leaves unused goes back with
// releaseBuffers.
func (l *loop) takeBuffers(budget int) []ring.Ref {
	refs := l.rxRefs[:min(budget, len(l.rxRefs), l.pool.Free())]
	for i := range refs {
		r, ok := l.pool.Get()
		if !ok {
			return refs[:i]
		}
		refs[i] = r
	}
	return refs
}

func (l *loop) releaseBuffers(refs []ring.Ref) {
	for _, r := range refs {
		l.pool.Release(r)
	}
}

// receiveCarried gives the first carried ports of readNext their read of
// this round, unless they had it already (a poll report came first: that
// read queued them again if they still hold frames). Ports queued during
// this round stay for the next one.
func (l *loop) receiveCarried(carried int) {
	for _, p := range l.readNext[:carried] {
		if p.dead || !p.readAgain || p.readRound == l.round {
			continue
		}
		l.receive(p)
	}
	l.readNext = append(l.readNext[:0], l.readNext[carried:]...)
}

// flush transmits on every port that got frames during the last batch.
func (l *loop) flush() {
	if len(l.written) > 0 {
		l.endWrites()
	}
	for _, p := range l.dirty {
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
			l.transmit(p)
		}
	}
	l.dirty = l.dirty[:0]
	if l.cross.to != nil {
		l.publishCross()
	}
}

// transmit sends p's queue until it is empty or the kernel pushes back;
// then write readiness is armed and the rest waits in the queue.
func (l *loop) transmit(p *port) {
	for p.txq.Len() > 0 {
		res := p.t.write(txView{&p.txq})
		l.moved += uint64(res.done)
		p.retire(l.pool, &res)
		if res.rerouted {
			l.rerouted(p)
		}
		switch {
		case res.err != nil && peerGone(res.err):
			l.sendingStopped(p)
			return
		case res.err != nil:
			l.kill(p, res.err)
			return
		case res.retryAfter > 0:
			p.retryAt = l.now + int64(res.retryAfter)
			l.retryPending = true
			return
		case res.blocked:
			if !p.writeArmed {
				p.writeArmed = true
				if err := l.waitWritable(p, true); err != nil {
					l.kill(p, err)
				}
			}
			return
		}
	}
	if p.writeArmed {
		p.writeArmed = false
		if err := l.waitWritable(p, false); err != nil {
			l.kill(p, err)
		}
	}
}

// rerouted forgets p's fd, which its transport closed: it reaches its
// peer another way from now on (a datagram client answered through its
// listener).
func (l *loop) rerouted(p *port) {
	p.fd = -1
	p.writeArmed = false
	l.e.clientLog.Info("datagram client takes frames only from the listener's address; answering through it",
		"port", p.id, "client", p.name)
}

// waitWritable asks to be told (or no longer) when p can take frames
// again: write readiness on its fd, unless its transport learns it
// otherwise.
func (l *loop) waitWritable(p *port, on bool) error {
	if p.caps.writeReadyElsewhere {
		return nil
	}
	return l.poll.setWrite(p.fd, p.id, on)
}

// sourceEvent serves a port whose transport polls fds of its own: the
// transport says what the readiness of fd sub means.
func (l *loop) sourceEvent(p *port, sub uint8, ev event) {
	if sub == 0 && p.caps.spreader != nil {
		// A control message (or the hang-up): with every pair at home.
		l.gatherNow(p)
		p.quietSince = l.now
	}
	l.e.beforeRequest(p, sub)
	r := p.t.ready(sub, ev.hangup)
	p.cnt.count(&r.dropped)
	if r.err == nil && r.watchChanged {
		r.err = l.watch(p, &r.watch)
		if r.err == nil && l.polling && p.caps.rings != nil {
			// Rings set up while the loop polls (busy-polling, or
			// coalescing, which may go on for as long as other guests
			// send) are polled as the others are: told so now, or the
			// guest would kick for every frame until the loop sleeps.
			_, r.err = p.caps.rings.busyPoll(true)
		}
	}
	if r.err != nil {
		l.kill(p, r.err)
		return
	}
	if r.offloadsKnown {
		p.offloads = r.offloads
	}
	if r.stateKnown && p.left.stopped.Load() != r.stopped {
		p.left.stopped.Store(r.stopped)
	}
	if r.heldChanged {
		l.e.noteHeld(p)
	}
	if r.write && !p.txClosed {
		l.transmit(p)
	}
	if r.read {
		l.serve(p)
	}
}

// watch polls the fds p's transport wants polled besides its own (fds[i]
// reported as sub i+1), in place of those it wanted before. Each earlier
// one is taken out first, and a failure to is no matter: the transport
// closes an fd it no longer wants, which takes it out of epoll, and the
// number may already be a new fd's that is not polled yet. So a number
// that comes back is always polled anew, never taken for the old fd.
func (l *loop) watch(p *port, fds *[maxSubFDs]int) error {
	for i, fd := range fds {
		if old := p.watched[i]; old >= 0 {
			l.poll.remove(old)
		}
		p.watched[i] = -1
		if fd < 0 {
			continue
		}
		if err := l.poll.add(fd, subToken(p.id, uint8(i+1))); err != nil {
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
func (l *loop) sendingStopped(p *port) {
	p.txClosed = true
	p.left.closing.Store(true)
	l.dropQueue(p)
	if p.writeArmed {
		p.writeArmed = false
		if err := l.waitWritable(p, false); err != nil {
			l.kill(p, err)
		}
	}
}

// dropQueue discards what waits for p, counted as port-closed.
func (l *loop) dropQueue(p *port) {
	for p.txq.Len() > 0 {
		l.pool.Release(p.txq.At(0))
		p.txq.Drop(1)
		p.cnt.drops[DropPortClosed]++
	}
}

// peerGone: errors after which a connected client's peer cannot take more
// frames, though what it sent before may still be readable.
func peerGone(err error) bool {
	return errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET)
}

// kill marks a port for closing at the end of the round, so no port
// number is reused while a batch may still refer to it.
func (l *loop) kill(p *port, err error) {
	if p.dead {
		return
	}
	if p.queuesOf != nil {
		l.handleFailed(p, err)
		return
	}
	p.dead = true
	p.left.closing.Store(true)
	e := l.e
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

// retryPorts sends to ports whose retry time has come.
func (l *loop) retryPorts() {
	for _, p := range l.live {
		if p.retryAt == 0 || p.dead {
			continue
		}
		if l.now < p.retryAt {
			l.retryPending = true // not yet: keep the timer running
			continue
		}
		p.retryAt = 0
		l.transmit(p)
	}
}

// sweep ages the MAC table, the secure-mode bindings and the datagram
// clients: the first loop's work, for the whole switch.
func (l *loop) sweep() {
	if l.index == 0 {
		l.expireDgram()
		l.e.macs.Expire(l.now)
		l.e.policy.Expire(l.now)
	}
	l.nextSweep = l.now + int64(sweepInterval)
}

// timeout is how long the loop may sleep in its poller: until its next
// timer (the sweep, a paused listener, a datagram retry), rounded up to
// the millisecond, or 0 when the next round has work already.
func (l *loop) timeout() time.Duration {
	next := l.nextSweep
	for i := range l.e.listeners[:l.listenerCount()] {
		if u := l.e.listeners[i].pausedUntil; u != 0 && u < next {
			next = u
		}
	}
	if l.hasWork() {
		if !l.heldBackByCross() {
			return 0
		}
		// Woken when the other loop takes frames; the bound is a guard.
		next = min(next, l.now+int64(time.Millisecond))
	}
	if l.retryPending && l.now+int64(dgramRetry) < next {
		next = l.now + int64(dgramRetry)
	}
	ms := (next - l.now + int64(time.Millisecond) - 1) / int64(time.Millisecond)
	if ms < 0 {
		ms = 0
	}
	return time.Duration(ms) * time.Millisecond
}

// listenerCount is how many listeners l polls: all for the first loop,
// none for the others.
func (l *loop) listenerCount() int {
	if l.index == 0 {
		return len(l.e.listeners)
	}
	return 0
}

// hasWork: the next round has ports to read without waiting for the
// poller (carried from this one, or waiting for a large buffer now free).
func (l *loop) hasWork() bool {
	return len(l.readNext) > 0 || len(l.largeWaiters) > 0 && l.pool.FreeLarge() > 0 ||
		l.cross.from != nil && l.crossPending()
}

// sleep says the loop is about to wait in its poller for up to timeout,
// so other loops wake it when they hand it frames; it returns 0 instead
// when frames came meanwhile (the producer saw it awake and did not wake
// it).
func (l *loop) sleep(timeout time.Duration) time.Duration {
	if timeout == 0 || l.cross.from == nil {
		return timeout
	}
	l.cross.sleeping.Store(true)
	if l.crossPending() {
		l.cross.sleeping.Store(false)
		return 0
	}
	return timeout
}

// posted is a client the first loop accepted (on listener via) for
// another.
type posted struct {
	p   *port
	via string
}

// post gives p, accepted on via by the first loop for l, to l's
// goroutine, which adopts it in its next round.
func (l *loop) post(p *port, via string) {
	l.inboxMu.Lock()
	l.inbox = append(l.inbox, posted{p, via})
	l.inboxMu.Unlock()
	if err := l.wake(); err != nil {
		l.e.log.Error("waking a worker for a new client", "worker", l.index, "err", err)
	}
}

// adoptInbox adopts the ports posted to l.
func (l *loop) adoptInbox() {
	l.inboxMu.Lock()
	ports := l.inbox
	l.inbox = nil
	l.inboxMu.Unlock()
	for _, c := range ports {
		l.adoptOrKill(c.p, c.via)
	}
}

// adoptOrKill adopts p, a client accepted on via, or closes it (at the end
// of the round) when its fd cannot be polled. The client is connected
// from here on (it gets floods), and the log says so only now.
func (l *loop) adoptOrKill(p *port, via string) {
	if err := l.adopt(p); err != nil {
		l.join(p)
		l.poll.remove(p.fd)
		l.kill(p, fmt.Errorf("polling its socket: %w", err))
		return
	}
	l.e.clientLog.Info("client connected", "port", p.id, "client", p.name, "socket", via, "kind", p.caps.kind, "worker", l.index)
}

// shutdown closes every client; queued frames are counted as port-closed.
func (l *loop) shutdown() {
	for _, p := range l.live {
		if !p.host {
			p.dead = true
		}
	}
	l.reap()
	l.adoptInbox() // posted after the last round: closed at once
	for _, p := range l.live {
		if !p.host {
			p.dead = true
		}
	}
	l.reap()
	l.closePoller()
	l.serveRequests()
}

func (l *loop) closePoller() {
	l.wakeMu.Lock()
	defer l.wakeMu.Unlock()
	if !l.pollClosed {
		l.pollClosed = true
		l.poll.close()
	}
}
