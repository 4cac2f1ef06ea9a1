package engine

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/vknetd/vknetd/ring"
)

// portTable is the switch's ports by number: which numbers are free, and
// how many clients and monitors there are. A port's number is its MAC
// table port and its secure-mode bindings' port, and is given back only
// when the port has been closed at the end of a round, so no batch can
// still refer to it. The ports themselves belong to loops (loop.live).
//
// Any loop looks a port up (get: the destination of a frame) and closes
// its own; the first loop opens them. So the numbers are atomic pointers,
// and the free list and counts are under a mutex taken only when a port
// opens or closes.
type portTable struct {
	byID []atomic.Pointer[port] // nil where free. Port 0 is the TAP when there is one.
	// live counts open ports, every loop's: the pool's guarantee
	// (mayQueue) holds for all of them.
	live atomic.Int32

	mu       sync.Mutex
	free     []uint32
	clients  int
	monitors int
	accepted uint64 // clients accepted since start
}

func newPortTable(maxPorts int) *portTable {
	t := &portTable{byID: make([]atomic.Pointer[port], maxPorts)}
	for id := maxPorts - 1; id >= 1; id-- {
		t.free = append(t.free, uint32(id))
	}
	return t
}

// get is the open port numbered id, or nil.
func (t *portTable) get(id uint32) *port { return t.byID[id].Load() }

// reserve takes a free number for a client (monitor false) or a monitor,
// within their limits; ok false when none may be had. The caller opens
// the port under it, or gives it back with unreserve.
func (t *portTable) reserve(maxClients int, monitor bool) (id uint32, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case len(t.free) == 0:
		return 0, false
	case monitor && t.monitors >= maxMonitors:
		return 0, false
	case !monitor && t.clients >= maxClients:
		return 0, false
	}
	id = t.free[len(t.free)-1]
	t.free = t.free[:len(t.free)-1]
	if monitor {
		t.monitors++
	} else {
		t.clients++
	}
	return id, true
}

// take takes the number id, as reserve would, for a port a previous
// daemon had (Adopt); false when it is not free.
func (t *portTable) take(id uint32, monitor bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, f := range t.free {
		if f != id {
			continue
		}
		t.free = append(t.free[:i], t.free[i+1:]...)
		if monitor {
			t.monitors++
		} else {
			t.clients++
		}
		return true
	}
	return false
}

// unreserve gives back a number reserve gave, for a port that was never
// opened.
func (t *portTable) unreserve(id uint32, monitor bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.free = append(t.free, id)
	if monitor {
		t.monitors--
	} else {
		t.clients--
	}
}

// accepted counts a client accepted.
func (t *portTable) accepted1() {
	t.mu.Lock()
	t.accepted++
	t.mu.Unlock()
}

// counts reads the clients connected, monitors and clients accepted.
func (t *portTable) counts() (clients, monitors int, accepted uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.clients, t.monitors, t.accepted
}

// openPort makes the port numbered id, with transport t, one of l's. id
// is 0 (the TAP) or one reserve gave. The port is not yet polled or
// reachable: l adopts it (adopt) once the caller has set it up.
func (l *loop) openPort(id uint32, t transport, fd int, name string) *port {
	e := l.e
	p := &port{id: id, loop: l, t: t, caps: t.caps(), fd: fd, name: name, pid: -1, uid: -1, txq: ring.NewQueue(e.cfg.QueueLen)}
	for i := range p.watched {
		p.watched[i] = -1
	}
	p.caps.readBudget = e.readBudget(p.caps)
	p.offloads = p.caps.offloads
	p.quietSince = int64(time.Since(e.start)) // l may be another loop: its clock is its own
	l.nports.Add(1)
	return p
}

// adopt makes p, which openPort made for l and its opener set up, one of
// l's live ports, polled and reachable: on l's goroutine.
func (l *loop) adopt(p *port) error {
	if p.fd >= 0 {
		if err := l.poll.add(p.fd, p.id); err != nil {
			return err
		}
	}
	l.join(p)
	return nil
}

// join makes p, polled already, one of l's live ports.
func (l *loop) join(p *port) {
	l.live = append(l.live, p)
	if p.caps.rings != nil {
		l.ringPorts++
	}
	l.e.ports.live.Add(1)
	l.e.ports.byID[p.id].Store(p)
	l.e.noteNew(p)
}

// reap closes the ports killed during this round and forgets their
// MACs and address bindings at once.
func (l *loop) reap() {
	for i := 0; i < len(l.live); i++ {
		p := l.live[i]
		if !p.dead {
			continue
		}
		l.gatherNow(p) // its pairs home before its device closes
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
	p.closed = true
	p.left.closing.Store(true)
	l.dropQueue(p)
	e.macs.RemovePort(p.id)
	e.leaveUser(p)
	e.policy.RemovePort(p.id)
	e.ports.byID[p.id].Store(nil)
	e.ports.live.Add(-1)
	l.nports.Add(-1)
	if p.caps.rings != nil {
		l.ringPorts--
	}
	e.noteGone(p) // before its fds close: a notice pending names them
	p.t.close()
	if p.dgram != nil {
		p.dgram.forget(p)
	}
	if p.host {
		return
	}
	if p.observer {
		for i, m := range l.mirrors {
			if m == p {
				l.mirrors = append(l.mirrors[:i], l.mirrors[i+1:]...)
				e.mirrored.Add(-1)
				break
			}
		}
	} else {
		e.forgetFilter(p)
		l.departed.add(&p.cnt)
	}
	e.ports.unreserve(p.id, p.observer)
}

// mayQueue applies the pool's guarantee (see pressureBacklog) to one more
// frame for out.
func (l *loop) mayQueue(out *port) bool {
	blocked := out.writeArmed || out.retryAt != 0
	if !blocked || out.txq.Len() < pressureBacklog {
		return true
	}
	e := l.e
	return l.pool.Free() >= max(pressureBacklog, e.readMax)*int(e.ports.live.Load())+poolReserve*e.readMax
}
