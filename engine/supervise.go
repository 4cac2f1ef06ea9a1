package engine

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/handover"
	"github.com/vknetd/vknetd/mactable"
	"github.com/vknetd/vknetd/secure"
)

// Crash recovery (vknetd --supervise). A supervisor process that never
// reads client data keeps copies of the clients' fds, so that a daemon
// that dies (SIGKILL, a panic) does not take the connections with it; a
// new daemon adopts them from the supervisor as from an upgrade
// (handover.go). The engine tells the supervisor of each client made and
// closed (NotifyPorts) and gives it, now and then, the tables to start
// from (Snapshot): the MAC table and bindings are at most that old, and
// what was learned since is learned again by the rules in force.
//
// A vhost-user guest's connection is more than its socket: the device's
// negotiated state and the fds it stands on (memory, eventfds) change as
// the front-end sets the device up. Its port is told to the supervisor
// each time that state changes (noteHeld), once the device is ready, with
// copies of those fds; a new daemon takes it up with its rings resumed
// from guest memory (vhostuser.Recover). A device not ready (mid
// negotiation, or stopped) is let go of: after a crash its socket closes
// and the front-end reconnects.

// PortNotice is a client made or closed in a round of the loop.
type PortNotice struct {
	Gone bool
	ID   uint32
	// Port describes a new client as a handover record does, its fds
	// naming indices of Fds (the port's own, then a datagram client's
	// socket file).
	Port handover.Port
	Fds  []int
	// Owned: Fds are copies the notice owns (a vhost-user device's, whose
	// fds change while it runs), closed once it is delivered or replaced.
	// Otherwise they are the port's own, open until it is noted gone.
	Owned bool `json:"-"`
}

// MaxHeldFds is the most fds a notice carries: a vhost-user device's
// socket, memory regions and each ring's kick and call eventfds.
const MaxHeldFds = 1 + 8 + 2*16

// heldTransport is a transport whose peer a supervisor can keep only
// with a copy of state that changes while it runs (vhost-user).
type heldTransport interface {
	// held writes the port's state into hp for a supervisor to keep, and
	// returns copies of the fds it refers to (by their index in it), now
	// the caller's; heldNothing when nothing could be taken up now (the
	// supervisor lets go of what it held), heldLater when the state
	// cannot be written now but will be soon (a message half read),
	// heldUnchanged when there is nothing to hold and nothing was.
	held(hp *handover.Port) ([]int, heldStatus)
	// holding says a supervisor holds the port's state; released that it
	// was told to let go of it, so held writes it anew next time.
	holding() bool
	released()
}

type heldStatus uint8

const (
	heldNow heldStatus = iota
	heldNothing
	heldLater
	heldUnchanged // nothing was held, and nothing is: no notice
)

// portNotes are the notices not yet given to the supervisor. Every loop
// opens (joins) and closes its own ports, so they come from several
// goroutines: each is written down at once, in the order of the events,
// under mu, so a port number closed by one loop and given again by the
// first is never heard of in the wrong order. Whichever loop ends a round
// with notices pending delivers them all, still under mu: until then a
// closing port's fds stay open (closePort notes before it closes them),
// so the numbers a notice carries are that port's when it is sent.
type portNotes struct {
	mu      sync.Mutex
	notify  func([]PortNotice)
	pending []PortNotice
	waiting atomic.Bool // pending is not empty: loops look at this alone
	// dropped are ports a supervisor held that Adopt could not take up,
	// for NotifyPorts to tell it to let go of.
	dropped []uint32
}

// NotifyPorts has fn called at the end of every round, on one loop's
// goroutine at a time, when clients were made, changed (a vhost-user
// device's state) or closed since the last call; owned fds of a notice
// are closed after fn returns. Set it before Run. Monitors are left out:
// a supervisor does not keep them.
func (e *Engine) NotifyPorts(fn func([]PortNotice)) {
	e.notes.mu.Lock()
	defer e.notes.mu.Unlock()
	e.notes.notify = fn
	for _, id := range e.notes.dropped {
		// Held by the supervisor, not taken up here (Adopt): it must let
		// go, so that the peer sees its socket close.
		e.notes.pending = append(e.notes.pending, PortNotice{Gone: true, ID: id})
		e.notes.waiting.Store(true)
	}
	e.notes.dropped = nil
	for _, l := range e.loops {
		for _, p := range l.live { // adopted ones: the supervisor hears of them again
			if p.caps.held != nil {
				e.notes.addHeld(p)
			} else {
				e.notes.addNew(p)
			}
		}
	}
}

// supervised: a supervisor keeps p's peer alive across a crash.
func supervised(p *port) bool {
	return !p.host && !p.observer
}

// noteNew and noteGone are the port table's hooks (join, closePort), on
// the loop that owns p.
func (e *Engine) noteNew(p *port) {
	if !supervised(p) || p.caps.held != nil {
		return // a vhost-user device is held once ready: noteHeld
	}
	e.notes.mu.Lock()
	defer e.notes.mu.Unlock()
	if e.notes.notify != nil {
		e.notes.addNew(p)
	}
}

func (e *Engine) noteGone(p *port) {
	if !supervised(p) {
		return
	}
	n := &e.notes
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.notify == nil {
		return
	}
	unheard := n.forget(p.id)
	if unheard && p.caps.held == nil {
		return // made and closed unheard of
	}
	// A held port's earlier state may have been heard: the supervisor
	// lets go of it, or of nothing.
	n.pending = append(n.pending, PortNotice{Gone: true, ID: p.id})
	n.waiting.Store(true)
}

// closeOwned closes a notice's own copies of fds.
func closeOwned(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// noteHeld tells the supervisor p's new state, replacing any not
// delivered yet: on the loop that owns p, after its transport said the
// state changed.
func (e *Engine) noteHeld(p *port) {
	if p.dead {
		return
	}
	e.notes.mu.Lock()
	defer e.notes.mu.Unlock()
	if e.notes.notify != nil {
		e.notes.addHeld(p)
	}
}

// beforeRequest is called before p's transport reads its own fd (sub 0):
// for a held vhost-user device, that is a request from its front-end,
// which may change the state the supervisor holds and expect a reply. The
// supervisor lets go of it first, and hears so before the request is
// read: a daemon that dies while handling it has a successor that does
// not take the device up with the state of before, which the front-end
// has left (it would wait for a reply that never comes); the socket
// closes instead, and the front-end reconnects. Once the request is
// handled the state is held again (noteHeld). Requests come while a
// device is set up or migrated, not per frame.
func (e *Engine) beforeRequest(p *port, sub uint8) {
	if sub != 0 {
		return
	}
	t := p.caps.held
	if t == nil || !t.holding() {
		return
	}
	n := &e.notes
	n.mu.Lock()
	defer n.mu.Unlock()
	t.released()
	if n.notify == nil {
		return
	}
	n.forget(p.id)
	n.pending = append(n.pending, PortNotice{Gone: true, ID: p.id})
	n.flush() // now: the notices before it go first
}

// forget drops what is pending about port id, closing the fds a notice
// owns; under mu. It says whether a notice of it being made was pending.
func (n *portNotes) forget(id uint32) (made bool) {
	kept := n.pending[:0]
	for _, q := range n.pending {
		if q.ID != id || q.Gone {
			kept = append(kept, q)
			continue
		}
		made = true
		if q.Owned {
			closeOwned(q.Fds)
		}
	}
	clear(n.pending[len(kept):])
	n.pending = kept
	n.waiting.Store(len(n.pending) > 0)
	return made
}

// addHeld writes down p's state as its transport holds it (under mu); a
// transport with nothing to hold has the supervisor let go of p.
func (n *portNotes) addHeld(p *port) {
	t := p.caps.held
	pn := PortNotice{ID: p.id, Owned: true, Port: handover.Port{ID: p.id, Kind: p.caps.kind, Name: p.name, PID: p.pid, UID: p.uid, Fd: -1}}
	fds, st := t.held(&pn.Port)
	switch st {
	case heldLater, heldUnchanged:
		return // the transport asks again when it has something
	case heldNothing:
		pn = PortNotice{Gone: true, ID: p.id}
	}
	n.forget(p.id)
	pn.Fds = fds
	n.pending = append(n.pending, pn)
	n.waiting.Store(true)
}

// addNew writes down p, made: under mu.
func (n *portNotes) addNew(p *port) {
	if !supervised(p) || p.dead {
		return
	}
	pn := PortNotice{ID: p.id, Port: handover.Port{ID: p.id, Kind: p.caps.kind, Name: p.name, PID: p.pid, UID: p.uid, Fd: -1}}
	add := func(fd int) int {
		if fd < 0 {
			return -1
		}
		pn.Fds = append(pn.Fds, fd)
		return len(pn.Fds) - 1
	}
	pn.Port.Fd = add(p.fd)
	if d := p.dgram; d != nil {
		g := &handover.Dgram{Listener: -1, Key: d.key, PathFd: add(d.pathFd), Dev: d.dev, Ino: d.ino, Via: d.via != nil}
		for i := range p.loop.e.listeners {
			if &p.loop.e.listeners[i] == d.listener {
				g.Listener = i
			}
		}
		pn.Port.Dgram = g
	}
	n.pending = append(n.pending, pn)
	n.waiting.Store(true)
}

// deliverNotes gives the supervisor what is pending, at the end of a
// round of any loop.
func (e *Engine) deliverNotes() {
	n := &e.notes
	if !n.waiting.Load() {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.flush()
}

// flush gives the supervisor every pending notice: under mu.
func (n *portNotes) flush() {
	out := n.pending
	n.pending = nil
	n.waiting.Store(false)
	if len(out) > 0 && n.notify != nil {
		n.notify(out)
	}
	for _, q := range out {
		if q.Owned {
			closeOwned(q.Fds)
		}
	}
}

// Snapshot is the switch's tables and counters without any fd: what a
// supervisor keeps to start a new daemon from after a crash. Each loop
// writes down its own ports on its goroutine, as for Stats.
func (e *Engine) Snapshot() (handover.Engine, error) {
	var st handover.Engine
	var departed counters
	perLoop := make([][]handover.Port, len(e.loops))
	for i, l := range e.loops {
		err := l.do(func() {
			departed.add(&l.departed)
			for _, p := range l.live {
				if p.dead {
					continue
				}
				hp := handover.Port{ID: p.id, Kind: p.caps.kind, Name: p.name, PID: p.pid, UID: p.uid, Fd: -1}
				exportCounters(&hp.Counters, &p.cnt)
				perLoop[i] = append(perLoop[i], hp)
			}
			if i == 0 {
				e.exportListeners(&st)
			}
		})
		if err != nil {
			return st, err
		}
	}
	_, _, st.Accepted = e.ports.counts()
	exportCounters(&st.Departed, &departed)
	for _, ports := range perLoop {
		st.Ports = append(st.Ports, ports...)
	}
	e.exportTables(&st, int64(time.Since(e.start)))
	return st, nil
}

// exportListeners writes down the listeners' counts: on the first loop.
func (e *Engine) exportListeners(st *handover.Engine) {
	for i := range e.listeners {
		var lc handover.ListenerCounts
		if d := e.listeners[i].dgram; d != nil {
			lc.Unnamed = d.unnamed
		}
		st.Listeners = append(st.Listeners, lc)
	}
}

// exportTables writes down the MAC table and the bindings, which any
// goroutine may read (the table's Walk and the policy's lock).
func (e *Engine) exportTables(st *handover.Engine, now int64) {
	e.macs.Walk(now, func(m mactable.Entry) {
		st.MACs = append(st.MACs, handover.MAC{MAC: m.MAC, Port: m.Port, AgeNs: int64(m.Age)})
	})
	e.policy.Bindings(func(b secure.Binding) { st.Bindings = append(st.Bindings, exportBinding(b, now)) })
}
