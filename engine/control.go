package engine

import "errors"

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
	select {
	case l.reqs <- func() { fn(); close(done) }:
	case <-l.exited:
		return ErrStopped
	}
	// The poller's fds are closed at shutdown and their numbers may be
	// reused at once: never write to them after that.
	l.wakeMu.Lock()
	var err error
	if !l.pollClosed {
		err = l.poll.wake()
	}
	l.wakeMu.Unlock()
	if err != nil {
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
func (e *Engine) Done() <-chan struct{} { return e.loops[0].exited }

// FlushMACs forgets every learned MAC address (SIGHUP): frames are flooded
// until the table is learned again.
func (e *Engine) FlushMACs() (int, error) {
	var n int
	err := e.do(func() { n = e.macs.Flush() })
	return n, err
}

// Stats takes a snapshot of every port's counters.
func (e *Engine) Stats() (Stats, error) {
	var s Stats
	err := e.do(func() { s = e.stats() })
	return s, err
}

// stats is Stats on the first loop's goroutine.
func (e *Engine) stats() Stats {
	s := Stats{
		MACs:     e.macs.Len(),
		Clients:  e.ports.clients,
		Accepted: e.ports.accepted,
		PoolFree: e.pool.Free(),
		PoolCap:  e.pool.Cap(),
	}
	s.Departed = PortStats{Kind: "departed", Name: "disconnected clients", PID: -1, UID: -1}
	var departed counters
	for _, l := range e.loops {
		s.Ports = append(s.Ports, l.portStats()...)
		departed.add(&l.departed)
	}
	departed.snapshot(&s.Departed)
	s.ListenerKernelDrops = e.listenerKernelDrops()
	return s
}

// portStats snapshots l's ports, on l's goroutine.
func (l *loop) portStats() []PortStats {
	e := l.e
	var out []PortStats
	for _, p := range l.live {
		ps := PortStats{ID: p.id, Kind: p.caps.kind, Name: p.name, PID: p.pid, UID: p.uid,
			MACs: e.macs.PortLen(p.id), Queued: p.txq.Len(), Offloads: p.offloads.String()}
		c := e.withKernelDrops(p)
		c.snapshot(&ps)
		out = append(out, ps)
	}
	return out
}
