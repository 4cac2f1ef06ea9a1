package engine

import (
	"math/bits"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/vknetd/vknetd/ring"
)

// A multi-queue guest's queue pairs spread over loops (--workers). A
// vhost-user guest with several queue pairs in use keeps them on its
// port's loop (its home) while its front-end negotiates; once the device
// has run for spreadQuiet without a control message, its pairs are
// spread: pair k goes to the loop k places after home, among the pairs
// in use, and each other loop serving some gets a queue handle: a port of
// its own (port.queuesOf) with the port's number, which reads those
// pairs' TX rings, writes their RX rings and counts what it moved. Each
// ring is then read or written by one loop only.
//
// A frame for the guest goes to the RX ring its flow hashes to (the
// transport's rxPair, the device's own choice), so to the loop that
// serves that pair (spreading.target), straight or across the rings
// between loops: one flow, one ring, one loop, in order. A flood too
// goes from the loop it came in on straight to that loop (floodSpread).
// The MAC table and the secure bindings know the port only; the listings
// add the handles' counters to it.
//
// The front-end may change the rings, the memory (unmapping what a loop
// reads) or the features only with every pair at home. So before the
// home loop handles any message from the guest's socket (or closes the
// port) it gathers them back: it parks every other loop at a round
// boundary (parkOthers), lets every frame in flight between loops reach
// its queue, moves the handles' kick fds and queued frames back to the
// port and lets the loops go. Spreading again waits for spreadQuiet
// more, so a guest that sends control messages costs at most two parks
// (a spread and a gather) per spreadQuiet, and none while it keeps
// talking. With one loop nothing is spread.

// spreadQuiet is how long a multi-queue guest's device must run without a
// control message before its pairs are spread.
const spreadQuiet = int64(1e9) // 1 s

// maxPairs is how many queue pairs a spread port may have: one kick per
// ring, two rings per pair.
const maxPairs = maxSubFDs / 2

// queueSpreader is a transport whose peer's queue pairs can be served by
// several loops (vhost-user with VIRTIO_NET_F_MQ). All but serveApart's
// transports' data path are called on the port's own loop, with the
// other loops parked.
type queueSpreader interface {
	// spreadPairs is the mask of pairs (bit k: pair k) that may be spread
	// now; 0 to keep them together.
	spreadPairs() uint8
	// serveApart hands pairs (a mask) to a transport of their own, for a
	// queue handle on the loop whose portIO is io.
	serveApart(pairs uint8, io *portIO) transport
	// rejoin takes back the pairs of t, which serveApart made, with what
	// it counted.
	rejoin(t transport)
	// rxPair is the pair whose RX ring frame goes to; false when none
	// runs.
	rxPair(frame []byte) (int, bool)
	// kicks are the fds to poll for the rings of pairs, by sub-number
	// less one (ring q as q), -1 elsewhere.
	kicks(pairs uint8) [maxSubFDs]int
}

// spreading is where a spread port's pairs are served.
type spreading struct {
	// byPair is the port (the spread port itself or a handle) serving
	// each pair; nil for a pair not in use, which no frame goes to.
	byPair  [maxPairs]*port
	handles []*port
	rxPair  func(frame []byte) (int, bool)
	// failed is a handle's loop's error on its rings, for the home loop
	// to close the port with (spreadFailed).
	failed atomic.Pointer[error]
}

// target is the port that serves the flow of frame, bound for p.
func (s *spreading) target(p *port, frame []byte) *port {
	if k, ok := s.rxPair(frame); ok && k < maxPairs && s.byPair[k] != nil {
		return s.byPair[k]
	}
	return p
}

// handleOn is p's handle on l, or nil.
func (s *spreading) handleOn(l *loop) *port {
	for _, h := range s.handles {
		if h.loop == l {
			return h
		}
	}
	return nil
}

// workers lists the loop serving each pair in use, "0,1,0,1", for logs.
func (s *spreading) workers() string {
	var b strings.Builder
	for _, p := range s.byPair {
		if p == nil {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(p.loop.index))
	}
	return b.String()
}

// device is the port p serves: p, or the port a queue handle serves
// pairs of.
func (p *port) device() *port {
	if p.queuesOf != nil {
		return p.queuesOf
	}
	return p
}

// parkOthers stops every loop but l between two rounds and returns the
// function that lets them go. False when another loop parks them now (or
// an upgrade freezes them): l must not wait for it, since that loop waits
// for l to park; try again in a later round.
func (l *loop) parkOthers() (release func(), ok bool) {
	e := l.e
	if !e.parkMu.TryLock() {
		return nil, false
	}
	thaw := make(chan struct{})
	for _, o := range e.loops {
		if o != l {
			_ = o.park(thaw) // an error: o exited, so it holds still
		}
	}
	e.parks.Add(1)
	return func() { close(thaw); e.parkMu.Unlock() }, true
}

// park stops l at its next round boundary until thaw is closed and
// returns once it is stopped: its state may then be read and written
// elsewhere, the channels ordering those accesses after l's round and
// before its next. An error says l has exited (it holds still as well).
func (l *loop) park(thaw <-chan struct{}) error {
	parked := make(chan struct{})
	if err := l.request(func() { close(parked); <-thaw }); err != nil {
		return err
	}
	select {
	case <-parked:
		return nil
	case <-l.exited:
		return ErrStopped
	}
}

// settleCross has every loop take what the others handed it, until no
// frame is in flight between loops: with every loop parked, each frame
// is then in the queue of the port (or handle) it was meant for. Taking
// frames hands none on, so one pass empties the rings; the passes after
// only check.
func (e *Engine) settleCross() {
	for pass := 0; pass < 4; pass++ {
		any := false
		for _, o := range e.loops {
			if o.cross.from != nil && o.crossPending() {
				any = true
				o.receiveCross()
			}
		}
		if !any {
			return
		}
	}
}

// trySpread spreads p's pairs if it has more than one in use and has been
// quiet for spreadQuiet; on p's loop.
func (l *loop) trySpread(p *port) {
	sp := p.caps.spreader
	if sp == nil || p.spread != nil || p.dead || p.hangup || p.txClosed || len(l.e.loops) < 2 ||
		l.now-p.quietSince < spreadQuiet {
		return
	}
	pairs := sp.spreadPairs()
	if bits.OnesCount8(pairs) < 2 {
		return
	}
	release, ok := l.parkOthers()
	if !ok {
		return
	}
	defer release()
	e := l.e
	e.settleCross()
	s := &spreading{rxPair: sp.rxPair}
	var masks [MaxWorkers]uint8
	n := 0
	for k := range maxPairs {
		if pairs&(1<<k) != 0 {
			masks[(l.index+n)%len(e.loops)] |= 1 << k
			n++
		}
	}
	for k := range maxPairs {
		if masks[l.index]&(1<<k) != 0 {
			s.byPair[k] = p
		}
	}
	undo := false
	for _, o := range e.loops {
		mask := masks[o.index]
		if o == l || mask == 0 {
			continue
		}
		t := sp.serveApart(mask, &o.io)
		h := &port{id: p.id, loop: o, t: t, caps: t.caps(), fd: -1, name: p.name, pid: p.pid, uid: p.uid,
			user: p.user, txq: ring.NewQueue(e.cfg.QueueLen), offloads: p.offloads, queuesOf: p}
		h.caps.readBudget = e.readBudget(h.caps)
		for i := range h.watched {
			h.watched[i] = -1
		}
		for i, fd := range sp.kicks(mask) {
			if fd < 0 {
				continue
			}
			if old := p.watched[i]; old >= 0 {
				l.poll.remove(old)
				p.watched[i] = -1
			}
			if err := o.poll.add(fd, subToken(p.id, uint8(i+1))); err != nil {
				// Polled nowhere, the ring would stall: back home, and
				// the spread undone below.
				if l.poll.add(fd, subToken(p.id, uint8(i+1))) == nil {
					p.watched[i] = fd
				}
				undo = true
				continue
			}
			h.watched[i] = fd
		}
		o.handles = append(o.handles, h)
		if h.caps.rings != nil {
			// Its rings as o polls them (--busy-poll): a ring p's loop
			// polled has the guest's kicks off, which o needs back on if
			// it waits in epoll.
			o.ringPorts++
			h.caps.rings.busyPoll(o.polling) // a fault shows at its read
		}
		o.readNextRound(h) // its rings may hold frames no kick will announce
		s.handles = append(s.handles, h)
		for k := range maxPairs {
			if mask&(1<<k) != 0 {
				s.byPair[k] = h
			}
		}
	}
	// What waits for p goes to the loops of its flows' pairs, in order.
	for n := p.txq.Len(); n > 0; n-- {
		r := p.txq.At(0)
		p.txq.Drop(1)
		to := s.target(p, l.pool.Frame(r))
		if to != p {
			l.pool.Cross(r)
		}
		if !to.txq.Push(r) {
			l.pool.Release(r)
			to.cnt.drops[DropQueueFull]++
		}
	}
	for _, h := range s.handles {
		if h.txq.Len() > 0 {
			h.loop.readNextRound(h) // its round transmits it (receiveCarried, then flush)
			h.dirty = true
			h.loop.dirty = append(h.loop.dirty, h)
		}
	}
	p.spread = s
	e.spreadPorts = append(e.spreadPorts, p)
	e.spreads.Add(1)
	if undo {
		l.gather(p)
		p.quietSince = l.now // tried again a quiet second later
		e.clientLog.Warn("queue pairs kept on one worker: a kick fd could not be polled by another (epoll: see fs.epoll.max_user_watches)",
			"port", p.id, "client", p.name)
		return
	}
	e.clientLog.Info("queue pairs spread over workers", "port", p.id, "client", p.name, "workers", s.workers())
}

// gather brings every pair of p, a spread port of l, back to l, with
// every other loop parked and no frame in flight between loops: the
// handles' kick fds, queued frames and counters.
func (l *loop) gather(p *port) {
	s := p.spread
	e := l.e
	for _, h := range s.handles {
		o := h.loop
		o.wakeMu.Lock()
		closed := o.pollClosed
		o.wakeMu.Unlock()
		for i, fd := range h.watched {
			if fd < 0 {
				continue
			}
			if !closed {
				o.poll.remove(fd)
			}
			h.watched[i] = -1
			if err := l.poll.add(fd, subToken(p.id, uint8(i+1))); err == nil {
				p.watched[i] = fd
			}
		}
		// A flow's frames all went to one handle: appended, they keep
		// their order.
		for h.txq.Len() > 0 {
			r := h.txq.At(0)
			h.txq.Drop(1)
			l.pool.Cross(r)
			if !p.txq.Push(r) {
				l.pool.Release(r)
				p.cnt.drops[DropQueueFull]++
			}
		}
		p.caps.spreader.rejoin(h.t)
		if h.caps.rings != nil {
			o.ringPorts--
		}
		p.cnt.add(&h.cnt)
		h.cnt = counters{}
		h.dead, h.closed = true, true // o skips it where it is still listed
		for i, x := range o.handles {
			if x == h {
				o.handles = append(o.handles[:i], o.handles[i+1:]...)
				break
			}
		}
	}
	if p.caps.rings != nil {
		// The rings o polled or waited for, as l does now.
		if _, err := p.caps.rings.busyPoll(l.polling); err != nil {
			l.kill(p, err)
		}
	}
	p.spread = nil
	for i, x := range e.spreadPorts {
		if x == p {
			e.spreadPorts = append(e.spreadPorts[:i], e.spreadPorts[i+1:]...)
			break
		}
	}
	e.gathers.Add(1)
	if p.txq.Len() > 0 && !p.dirty {
		p.dirty = true
		l.dirty = append(l.dirty, p)
	}
	l.readNextRound(p) // the rings that come back may hold frames no kick will announce
	e.log.Debug("queue pairs back on one worker", "port", p.id, "client", p.name)
}

// collapse gathers p's pairs back to l, its loop; false when the other
// loops cannot be parked now (try again in a later round).
func (l *loop) collapse(p *port) bool {
	release, ok := l.parkOthers()
	if !ok {
		return false
	}
	defer release()
	l.e.settleCross()
	l.gather(p)
	return true
}

// gatherNow gathers p's pairs back to l, its loop, waiting while another
// loop parks the others: it serves l's requests meanwhile, so that loop
// (or an upgrade) can park l too. p may be gathered by then (an upgrade's
// export gathers every port).
func (l *loop) gatherNow(p *port) {
	for p.spread != nil && !l.collapse(p) {
		l.serveRequests()
		runtime.Gosched()
	}
}

// gatherAll gathers every spread port, with every loop parked (an
// upgrade's export).
func (e *Engine) gatherAll() {
	e.settleCross()
	for _, l := range e.loops {
		for _, p := range l.live {
			if p.spread != nil {
				l.gather(p)
			}
		}
	}
}

// handleFailed stops h, a queue handle whose rings failed, and has the
// home loop close the port with err.
func (l *loop) handleFailed(h *port, err error) {
	h.dead = true
	p := h.queuesOf
	if err == nil {
		err = errPeerClosed
	}
	if p.spread != nil {
		p.spread.failed.CompareAndSwap(nil, &err)
	}
	p.loop.spreadFailed.Store(true)
	p.loop.wake()
}

// closeFailedSpread closes the spread ports of l whose handles failed.
func (l *loop) closeFailedSpread() {
	l.spreadFailed.Store(false)
	for _, p := range l.live {
		if p.spread == nil {
			continue
		}
		if err := p.spread.failed.Load(); err != nil {
			l.kill(p, *err)
		}
	}
}

// checkSpread spreads the quiet multi-queue ports of l (trySpread), at
// most once per spreadQuiet each.
func (l *loop) checkSpread() {
	l.nextSpreadCheck = l.now + spreadQuiet/4
	for _, p := range l.live {
		if p.caps.spreader != nil && p.spread == nil {
			l.trySpread(p)
		}
	}
}

// floodSpread delivers a flooded frame to every spread port but in's,
// each to the loop serving the pair of the frame's flow, straight from
// this loop, as a unicast frame from in to it goes: so a flow's frames
// flooded while its destination MAC is unknown, and unicast once it is
// learned, take one way, in order. (Handed to the port's loop first,
// they would take two, and the unicast ones could pass them.) The loops
// that take a flood skip spread ports.
func (l *loop) floodSpread(in *port, r ring.Ref, fromClient bool) {
	for _, p := range l.e.spreadPorts {
		if p.id == in.id {
			continue
		}
		t := p.spread.target(p, l.pool.Frame(r))
		if t.loop == l {
			if !t.dead {
				l.deliver(in, t, r, fromClient)
			}
		} else if l.readyToHandOver(in, r) {
			l.handOver(in, t.loop, r, crossQueue, t, false)
		}
	}
}
