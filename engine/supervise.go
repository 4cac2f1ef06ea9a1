package engine

import (
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

// PortNotice is a client made or closed in a round of the loop.
type PortNotice struct {
	Gone bool
	ID   uint32
	// Port describes a new client as a handover record does, its fds
	// naming indices of Fds (the port's own, then a datagram client's
	// socket file).
	Port handover.Port
	Fds  []int
}

// NotifyPorts has fn called on the loop goroutine at the end of every
// round in which clients were made or closed. Set it before Run. Ports
// whose peer a supervisor cannot keep alive are left out: vhost-user
// guests (their rings cannot be taken over after a crash: they reconnect)
// and monitors.
func (e *Engine) NotifyPorts(fn func([]PortNotice)) {
	e.notify = fn
	for _, p := range e.live {
		e.fresh = append(e.fresh, p) // adopted ones: the supervisor hears of them again
	}
}

// noteNew and noteGone are the port table's hooks (newPort, close).
func (e *Engine) noteNew(p *port) {
	if e.notify != nil {
		e.fresh = append(e.fresh, p)
	}
}

func (e *Engine) noteGone(p *port) {
	if e.notify == nil {
		return
	}
	for i, q := range e.fresh {
		if q == p { // made and closed in one round: nobody heard of it
			e.fresh = append(e.fresh[:i], e.fresh[i+1:]...)
			return
		}
	}
	e.gone = append(e.gone, p.id)
}

// notifyPorts tells the supervisor of the round's new and closed clients.
func (e *Engine) notifyPorts() {
	if len(e.fresh) == 0 && len(e.gone) == 0 {
		return
	}
	var out []PortNotice
	for _, id := range e.gone {
		out = append(out, PortNotice{Gone: true, ID: id})
	}
	for _, p := range e.fresh {
		if p.dead || p.host || p.observer || p.caps.kind == "vhost-user" {
			continue
		}
		n := PortNotice{ID: p.id}
		n.Port = handover.Port{ID: p.id, Kind: p.caps.kind, Name: p.name, PID: p.pid, UID: p.uid, Fd: -1}
		add := func(fd int) int {
			if fd < 0 {
				return -1
			}
			n.Fds = append(n.Fds, fd)
			return len(n.Fds) - 1
		}
		n.Port.Fd = add(p.fd)
		if d := p.dgram; d != nil {
			g := &handover.Dgram{Listener: -1, Key: d.key, PathFd: add(d.pathFd), Dev: d.dev, Ino: d.ino, Via: d.via != nil}
			for i := range e.listeners {
				if &e.listeners[i] == d.listener {
					g.Listener = i
				}
			}
			n.Port.Dgram = g
		}
		out = append(out, n)
	}
	e.fresh, e.gone = e.fresh[:0], e.gone[:0]
	if len(out) > 0 {
		e.notify(out)
	}
}

// Snapshot is the switch's tables and counters without any fd: what a
// supervisor keeps to start a new daemon from after a crash.
func (e *Engine) Snapshot() (handover.Engine, error) {
	var st handover.Engine
	err := e.do(func() {
		st.Accepted = e.accepted
		exportCounters(&st.Departed, &e.departed)
		for i := range e.listeners {
			var lc handover.ListenerCounts
			if d := e.listeners[i].dgram; d != nil {
				lc.Unnamed = d.unnamed
			}
			st.Listeners = append(st.Listeners, lc)
		}
		for _, p := range e.live {
			if p.dead {
				continue
			}
			hp := handover.Port{ID: p.id, Kind: p.caps.kind, Name: p.name, PID: p.pid, UID: p.uid, Fd: -1}
			exportCounters(&hp.Counters, &p.cnt)
			st.Ports = append(st.Ports, hp)
		}
		e.macs.Walk(e.now, func(m mactable.Entry) {
			st.MACs = append(st.MACs, handover.MAC{MAC: m.MAC, Port: m.Port, AgeNs: int64(m.Age)})
		})
		e.policy.Bindings(func(b secure.Binding) {
			st.Bindings = append(st.Bindings, exportBinding(b, e.now))
		})
	})
	return st, err
}
