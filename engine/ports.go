package engine

import "github.com/vknetd/vknetd/ring"

// portTable is the switch's ports by number: which numbers are free, and
// how many clients and monitors there are. A port's number is its MAC
// table port and its secure-mode bindings' port, and is given back only
// when the port has been closed at the end of a round, so no batch can
// still refer to it. The ports themselves belong to loops (loop.live).
type portTable struct {
	byID []*port // nil where free. Port 0 is the TAP when there is one.
	free []uint32
	// live counts open ports, every loop's: the pool's guarantee
	// (mayQueue) holds for all of them.
	live     int
	clients  int
	monitors int
	accepted uint64 // clients accepted since start
}

func newPortTable(maxPorts int) portTable {
	t := portTable{byID: make([]*port, maxPorts)}
	for id := maxPorts - 1; id >= 1; id-- {
		t.free = append(t.free, uint32(id))
	}
	return t
}

// get is the open port numbered id, or nil.
func (t *portTable) get(id uint32) *port { return t.byID[id] }

// nextFree is the number the next port will have (false: none is free).
// It is taken by openPort.
func (t *portTable) nextFree() (uint32, bool) {
	if len(t.free) == 0 {
		return 0, false
	}
	return t.free[len(t.free)-1], true
}

// take takes id, which nextFree returned.
func (t *portTable) take(id uint32) {
	if n := len(t.free); n > 0 && t.free[n-1] == id {
		t.free = t.free[:n-1]
	}
}

// openPort makes the port numbered id, with transport t, one of l's. id
// is 0 (the TAP) or one nextFree returned.
func (l *loop) openPort(id uint32, t transport, fd int, name string) *port {
	e := l.e
	p := &port{id: id, loop: l, t: t, caps: t.caps(), fd: fd, name: name, pid: -1, uid: -1, txq: ring.NewQueue(e.cfg.QueueLen)}
	for i := range p.watched {
		p.watched[i] = -1
	}
	if p.caps.readBudget <= 0 {
		p.caps.readBudget = e.cfg.Batch
	}
	p.caps.readBudget = min(p.caps.readBudget, maxReadBudget)
	p.offloads = p.caps.offloads
	e.ports.take(id)
	e.ports.byID[id] = p
	e.ports.live++
	l.live = append(l.live, p)
	return p
}

// reap closes the ports killed during this round and forgets their
// MACs and address bindings at once.
func (l *loop) reap() {
	for i := 0; i < len(l.live); i++ {
		p := l.live[i]
		if !p.dead {
			continue
		}
		l.closePort(p)
		l.live = append(l.live[:i], l.live[i+1:]...)
		i--
	}
}

// closePort lets go of everything p holds, in the switch's tables too,
// and gives its number back.
func (l *loop) closePort(p *port) {
	e := l.e
	if p.fd >= 0 {
		l.poll.remove(p.fd)
	}
	l.dropQueue(p)
	e.macs.RemovePort(p.id)
	e.leaveUser(p)
	e.policy.RemovePort(p.id)
	e.ports.byID[p.id] = nil
	e.ports.live--
	p.t.close()
	if p.dgram != nil {
		p.dgram.forget(p)
	}
	if p.host {
		return
	}
	e.ports.free = append(e.ports.free, p.id)
	if p.observer {
		e.ports.monitors--
		for i, m := range l.mirrors {
			if m == p {
				l.mirrors = append(l.mirrors[:i], l.mirrors[i+1:]...)
				break
			}
		}
		return
	}
	e.forgetFilter(p)
	l.departed.add(&p.cnt)
	e.ports.clients--
}

// mayQueue applies the pool's guarantee (see pressureBacklog) to one more
// frame for out.
func (l *loop) mayQueue(out *port) bool {
	blocked := out.writeArmed || out.retryAt != 0
	if !blocked || out.txq.Len() < pressureBacklog {
		return true
	}
	e := l.e
	return l.pool.Free() >= max(pressureBacklog, e.readMax)*e.ports.live+poolReserve*e.readMax
}
