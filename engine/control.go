package engine

import (
	"errors"
	"sort"
	"strconv"
)

// ErrStopped is returned by control calls made after the loop has exited.
var ErrStopped = errors.New("engine: stopped")

// Control requests. Other goroutines never touch a loop's state: they
// queue a function for the loop to run between rounds (do) and wait for
// it. The switch-wide ones (Stop, FlushMACs, the listings) go to the
// first loop.

// do runs fn on the first loop's goroutine and waits for it.
func (e *Engine) do(fn func()) error { return e.loops[0].do(fn) }

// do runs fn on l's goroutine and waits for it, so control calls never
// share state with the forwarding path.
func (l *loop) do(fn func()) error {
	done := make(chan struct{})
	if err := l.request(func() { fn(); close(done) }); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-l.exited:
		// shutdown runs queued requests before exited closes, so a request
		// that made it into the queue has run.
		select {
		case <-done:
			return nil
		default:
			return ErrStopped
		}
	}
}

// request queues fn for l's goroutine, between two rounds, and wakes l.
func (l *loop) request(fn func()) error {
	select {
	case l.reqs <- fn:
	case <-l.exited:
		return ErrStopped
	}
	// The poller's fds are closed at shutdown and their numbers may be
	// reused at once: never write to them after that.
	l.wakeMu.Lock()
	defer l.wakeMu.Unlock()
	if l.pollClosed {
		return nil
	}
	return l.poll.wake()
}

func (l *loop) serveRequests() {
	for {
		select {
		case f := <-l.reqs:
			f()
		default:
			return
		}
	}
}

// Stop makes Run close every client and return. It is safe to call more
// than once and from any goroutine.
func (e *Engine) Stop() {
	e.do(func() { e.loops[0].stopping = true })
}

// Done is closed when Run has returned.
func (e *Engine) Done() <-chan struct{} { return e.done }

// FlushMACs forgets every learned MAC address (SIGHUP): frames are flooded
// until the table is learned again.
func (e *Engine) FlushMACs() (int, error) {
	var n int
	err := e.do(func() { n = e.macs.Flush() })
	return n, err
}

// Stats takes a snapshot of every port's counters: each loop snapshots its
// own, on its goroutine, and the switch-wide figures come with the first.
func (e *Engine) Stats() (Stats, error) {
	snaps := make([]loopStats, len(e.loops))
	var s Stats
	// No queue pairs spread or gathered between two loops' snapshots: a
	// handle's counts would be listed twice, or not at all (spread.go).
	// A loop waiting to park the others serves this meanwhile.
	e.parkMu.Lock()
	defer e.parkMu.Unlock()
	for i, l := range e.loops {
		err := l.do(func() {
			snaps[i] = l.snapshot()
			if i == 0 {
				s = e.switchStats()
			}
		})
		if err != nil {
			return Stats{}, err
		}
	}
	s.add(snaps)
	return s, nil
}

// loopStats is one loop's part of Stats.
type loopStats struct {
	ports    []PortStats
	cnts     []counters // ports[i]'s
	pairs    []pairCounts
	departed counters
	cached   int // free buffers in the loop's cache (ring.Pool.Cached)
	// handles are the queue handles the loop serves for ports of other
	// loops (spread.go): their counts go to their ports'.
	handles []handleStats
}

// handleStats is what a queue handle counted and has queued.
type handleStats struct {
	id     uint32
	cnt    counters
	pairs  pairCounts
	queued int
}

// switchStats are the figures of the whole switch, without the ports.
func (e *Engine) switchStats() Stats {
	clients, _, accepted := e.ports.counts()
	s := Stats{
		MACs:     e.macs.Len(),
		Clients:  clients,
		Accepted: accepted,
		MACMoves: e.macMoves.Load(),
		PoolFree: e.pool.Free(),
		PoolCap:  e.pool.Cap(),
		Departed: PortStats{Kind: "departed", Name: "disconnected clients", PID: -1, UID: -1},
	}
	s.ListenerKernelDrops = e.listenerKernelDrops()
	return s
}

// add puts the loops' parts into s, the ports in order of their numbers
// (the TAP first).
func (s *Stats) add(snaps []loopStats) {
	var departed counters
	for i := range snaps {
		addHandles(&snaps[i], snaps) // before any loop's ports are copied
	}
	for i := range snaps {
		for k := range snaps[i].ports {
			snaps[i].pairs[k].list(&snaps[i].ports[k])
		}
		s.Ports = append(s.Ports, snaps[i].ports...)
		departed.add(&snaps[i].departed)
		s.PoolFree += snaps[i].cached
	}
	if len(snaps) > 1 {
		sort.Slice(s.Ports, func(i, j int) bool { return s.Ports[i].ID < s.Ports[j].ID })
	}
	departed.snapshot(&s.Departed)
}

// addHandles adds the counts of the queue handles in snap to the ports
// they serve pairs of, in snaps (another loop's): a spread port is
// listed once, with every loop's share of its frames.
func addHandles(snap *loopStats, snaps []loopStats) {
	for _, h := range snap.handles {
		for j := range snaps {
			for k := range snaps[j].ports {
				if ps := &snaps[j].ports[k]; ps.ID == h.id {
					c := &snaps[j].cnts[k]
					c.add(&h.cnt)
					c.snapshot(ps)
					snaps[j].pairs[k].add(&h.pairs)
					ps.Queued += h.queued
				}
			}
		}
	}
}

// pairFrames is what p's transport counted by queue pair, if it does.
func pairFrames(p *port) pairCounts {
	if p.caps.pairs != nil {
		return p.caps.pairs.pairFrames()
	}
	return pairCounts{}
}

// snapshot is l's part of Stats, on l's goroutine.
func (l *loop) snapshot() loopStats {
	e := l.e
	ls := loopStats{departed: l.departed, cached: l.pool.Cached()}
	for _, p := range l.live {
		ps := PortStats{ID: p.id, Kind: p.caps.kind, Name: p.name, PID: p.pid, UID: p.uid,
			MACs: e.macs.PortLen(p.id), Queued: p.txq.Len(), Offloads: p.offloads.String(), Workers: strconv.Itoa(l.index)}
		if p.spread != nil {
			ps.Workers = p.spread.workers()
		}
		c := e.withKernelDrops(p)
		c.snapshot(&ps)
		ls.ports = append(ls.ports, ps)
		ls.cnts = append(ls.cnts, c)
		ls.pairs = append(ls.pairs, pairFrames(p))
	}
	for _, h := range l.handles {
		ls.handles = append(ls.handles, handleStats{id: h.id, cnt: h.cnt, pairs: pairFrames(h), queued: h.txq.Len()})
	}
	return ls
}
