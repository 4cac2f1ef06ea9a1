package engine

import "errors"

// ErrStopped is returned by control calls made after the loop has exited.
var ErrStopped = errors.New("engine: stopped")

// do runs fn on the loop goroutine and waits for it, so control calls
// never share state with the forwarding path.
func (e *Engine) do(fn func()) error {
	done := make(chan struct{})
	select {
	case e.reqs <- func() { fn(); close(done) }:
	case <-e.exited:
		return ErrStopped
	}
	// The poller's fds are closed at shutdown and their numbers may be
	// reused at once: never write to them after that.
	e.wakeMu.Lock()
	var err error
	if !e.pollClosed {
		err = e.poll.wake()
	}
	e.wakeMu.Unlock()
	if err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-e.exited:
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

func (e *Engine) serveRequests() {
	for {
		select {
		case f := <-e.reqs:
			f()
		default:
			return
		}
	}
}

// Stop makes Run close every client and return. It is safe to call more
// than once and from any goroutine.
func (e *Engine) Stop() {
	e.do(func() { e.stopping = true })
}

// Done is closed when Run has returned.
func (e *Engine) Done() <-chan struct{} { return e.exited }

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

func (e *Engine) stats() Stats {
	s := Stats{
		MACs:     e.macs.Len(),
		Clients:  e.clients,
		Accepted: e.accepted,
		MACMoves: e.macMoves,
		PoolFree: e.pool.Free(),
		PoolCap:  e.pool.Cap(),
	}
	for _, p := range e.live {
		ps := PortStats{ID: p.id, Kind: p.caps.kind, Name: p.name, PID: p.pid, UID: p.uid,
			MACs: e.macs.PortLen(p.id), Queued: p.txq.Len(), Offloads: p.offloads.String()}
		c := e.withKernelDrops(p)
		c.snapshot(&ps)
		s.Ports = append(s.Ports, ps)
	}
	s.Departed = PortStats{Kind: "departed", Name: "disconnected clients", PID: -1, UID: -1}
	e.departed.snapshot(&s.Departed)
	s.ListenerKernelDrops = e.listenerKernelDrops()
	return s
}
