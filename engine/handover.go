package engine

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/handover"
	"github.com/vknetd/vknetd/ring"
	"github.com/vknetd/vknetd/secure"
)

// Handing the switch to a new process (vknetctl upgrade). The old engine
// freezes: every loop stops between two rounds, on its own goroutine,
// and the frames loops had handed each other are taken into their
// destinations' queues; every queue is tried once more, and the state
// (handover.Engine) is written with the fds it refers to. From then on
// no loop reads, so every frame a client sends waits in the kernel's
// socket buffers until the new engine reads it; frames still queued here
// go in the record and are sent by the new engine first. The new engine
// is built as usual (New) and adopts the record (Adopt) before its loops
// run; it sends and reads nothing before Run, so if the new process gives
// up, the old engine thaws and carries on as if nothing happened.

// Frozen is a frozen engine's state, and the way back.
type Frozen struct {
	// State refers to Fds by index, plus the fdBase given to Freeze; the
	// fds stay the engine's (sending them over a unix socket passes
	// copies).
	State handover.Engine
	Fds   []int
	// Refused is why the engine cannot be handed over, or nil.
	Refused error

	thaw     chan struct{}
	thawOnce sync.Once
	fdBase   int
	e        *Engine
}

// Thaw lets every loop run again (the new process failed).
func (f *Frozen) Thaw() { f.thawOnce.Do(func() { close(f.thaw) }) }

// Freeze stops every loop after its current round and exports the
// state. The loops stay stopped (control calls wait) until Thaw; after a
// handover that succeeded the process exits with the engine frozen. The
// state refers to Fds[i] as fdBase+i: the daemon sends its own fds
// (listeners, TAP) first.
func (e *Engine) Freeze(fdBase int) (*Frozen, error) {
	f := &Frozen{thaw: make(chan struct{}), fdBase: fdBase, e: e}
	// No loop parks the others meanwhile (spread.go); one that waits to
	// serves its requests, so it parks here too.
	e.parkMu.Lock()
	defer e.parkMu.Unlock()
	// Each loop parks in a request of its own, at a round boundary, until
	// Thaw: its state is then written here, on this goroutine, and the
	// channels order those writes after the loop's and before its next
	// round.
	for _, l := range e.loops {
		if err := l.park(f.thaw); err != nil {
			f.Thaw()
			return nil, err
		}
	}
	e.export(f)
	return f, nil
}

// export writes the state, with every loop stopped between rounds.
func (e *Engine) export(f *Frozen) {
	// Frames one loop handed another are queued on their destinations,
	// spread queue pairs come back to their ports (with what their
	// handles queued), then every queue gets one more try: what the
	// kernel takes now need not be carried over.
	e.gatherAll()
	for _, l := range e.loops {
		for _, p := range l.live {
			if !p.dead && p.txq.Len() > 0 && !p.txClosed {
				l.transmit(p)
			}
		}
	}
	now := int64(time.Since(e.start))
	st := &f.State
	_, _, st.Accepted = e.ports.counts()
	var departed counters
	for _, l := range e.loops {
		departed.add(&l.departed)
	}
	exportCounters(&st.Departed, &departed)
	e.exportListeners(st)
	addFd := func(fd int) int {
		if fd < 0 {
			return -1
		}
		f.Fds = append(f.Fds, fd)
		return f.fdBase + len(f.Fds) - 1
	}
	x := &exportScope{addFd: addFd, now: now, listenerIndex: func(ls *listenerState) int {
		for i := range e.listeners {
			if &e.listeners[i] == ls {
				return i
			}
		}
		return -1
	}}
	var live []*port
	for _, l := range e.loops {
		live = append(live, l.live...)
	}
	sort.Slice(live, func(i, j int) bool { return live[i].id < live[j].id })
	for _, p := range live {
		if p.dead {
			continue
		}
		hp := handover.Port{ID: p.id, Kind: p.caps.kind, Name: p.name, PID: p.pid, UID: p.uid, Fd: -1, Mirror: p.mirror}
		exportCounters(&hp.Counters, &p.cnt)
		if err := p.t.export(x, &hp); err != nil && f.Refused == nil {
			f.Refused = err
		}
		pool := p.loop.pool
		for i := 0; i < p.txq.Len(); i++ {
			r := p.txq.At(i)
			if h := pool.Hdr(r); *h != (gso.VirtioNetHdr{}) {
				// A superframe with work left: not carried (rare: the
				// queue was tried just now).
				hp.Counters.Drops[DropPortClosed.String()]++
				if i == 0 {
					hp.TxOff = 0
				}
				continue
			}
			hp.Queue = append(hp.Queue, append([]byte(nil), pool.Frame(r)...))
		}
		st.Ports = append(st.Ports, hp)
	}
	e.exportTables(st, now)
}

// What an upgrade carries of each transport (vhost-user's is in
// handover_linux.go); adopt reads it back.

// export counts a superframe half cut as lost: its rest is not carried.
// The TAP's fd is the daemon's own, not the port's.
func (t *tapTransport) export(_ *exportScope, hp *handover.Port) error {
	if t.pending > 0 {
		hp.Counters.Drops[DropPortClosed.String()]++
	}
	return nil
}

func (t *msgTransport) export(x *exportScope, hp *handover.Port) error {
	hp.Fd = x.addFd(t.fd)
	return nil
}

// export carries the bytes read but not yet a whole frame, and how far
// the frame at the head of the queue was written.
func (s *streamTransport) export(x *exportScope, hp *handover.Port) error {
	hp.Fd = x.addFd(s.fd)
	hp.Unread = append([]byte(nil), s.buf[s.start:s.end]...)
	hp.TxOff = s.txOff
	return nil
}

// export carries the peer's address and how it was checked, and the
// listener it sends to.
func (t *dgramTransport) export(x *exportScope, hp *handover.Port) error {
	d := t.d
	hp.Dgram = &handover.Dgram{Listener: x.listenerIndex(d.listener), Key: d.key, PathFd: x.addFd(d.pathFd),
		Dev: d.dev, Ino: d.ino, Via: d.via != nil, IdleNs: max(x.now-d.lastSeen, 0)}
	hp.Fd = x.addFd(t.fd)
	return nil
}

// exportBinding is b with its end as time left (0: with its port; -1:
// never).
func exportBinding(b secure.Binding, now int64) handover.Binding {
	left := int64(0)
	switch {
	case b.Expires == math.MaxInt64:
		left = -1
	case b.Expires != 0:
		left = max(b.Expires-now, 1)
	}
	return handover.Binding{IP: b.IP, MAC: b.MAC, Port: b.Port, Source: uint8(b.Source), LeftNs: left}
}

func exportCounters(h *handover.Counters, c *counters) {
	h.RxFrames, h.RxBytes, h.TxFrames, h.TxBytes, h.Unlearned = c.rxFrames, c.rxBytes, c.txFrames, c.txBytes, c.unlearned
	h.Drops, h.Secure, h.GSO = map[string]uint64{}, map[string]uint64{}, map[string]uint64{}
	for i, n := range c.drops {
		if n != 0 {
			h.Drops[Drop(i).String()] = n
		}
	}
	for i, n := range c.secureDrops {
		if n != 0 {
			h.Secure[secure.Reason(i).String()] = n
		}
	}
	for i, n := range c.gsoDrops {
		if n != 0 {
			h.GSO[gso.Reason(i).String()] = n
		}
	}
}

// importCounters is exportCounters backwards; a reason this daemon does
// not know is refused, since its count would vanish.
func importCounters(c *counters, h *handover.Counters) error {
	c.rxFrames, c.rxBytes, c.txFrames, c.txBytes, c.unlearned = h.RxFrames, h.RxBytes, h.TxFrames, h.TxBytes, h.Unlearned
	for name, n := range h.Drops {
		i := indexOf(name, int(numDrops), func(i int) string { return Drop(i).String() })
		if i < 0 {
			return fmt.Errorf("unknown drop reason %q", name)
		}
		c.drops[i] = n
	}
	for name, n := range h.Secure {
		i := indexOf(name, int(secure.NumReasons), func(i int) string { return secure.Reason(i).String() })
		if i < 0 {
			return fmt.Errorf("unknown secure-mode reason %q", name)
		}
		c.secureDrops[i] = n
	}
	for name, n := range h.GSO {
		i := indexOf(name, int(gso.NumReasons), func(i int) string { return gso.Reason(i).String() })
		if i < 0 {
			return fmt.Errorf("unknown offload reason %q", name)
		}
		c.gsoDrops[i] = n
	}
	return nil
}

func indexOf(name string, n int, nameOf func(int) string) int {
	for i := 0; i < n; i++ {
		if nameOf(i) == name {
			return i
		}
	}
	return -1
}

// Adopt makes the engine, built by New and not running yet, the one st
// describes: its ports with their ids, fds (fds[i] is st's index i; the
// engine owns those it adopts), counters and queued frames, the MAC table
// and the bindings. Each port goes to a loop as a new one would, in the
// order of their numbers: the TAP, monitors and datagram clients to the
// first, the others to the loop with the fewest ports; so the old
// daemon's loops need not match. Nothing is read or sent before Run. On
// an error the engine must not be run; fds are the caller's to close.
func (e *Engine) Adopt(st *handover.Engine, fds []int) error {
	if len(st.Listeners) > len(e.listeners) {
		return fmt.Errorf("the state has %d listeners, this daemon %d: start it with the same flags", len(st.Listeners), len(e.listeners))
	}
	// The MAC table's ages and the bindings' times are kept by moving
	// this engine's clock origin back, so the oldest entry is still at or
	// after time 0.
	var oldest int64
	for _, m := range st.MACs {
		oldest = max(oldest, m.AgeNs)
	}
	for _, p := range st.Ports {
		if p.Dgram != nil {
			oldest = max(oldest, p.Dgram.IdleNs)
		}
	}
	shift := time.Duration(oldest) + time.Second
	e.start = e.start.Add(-shift)
	now := int64(time.Since(e.start))
	for _, l := range e.loops {
		l.now = now
	}

	e.ports.mu.Lock()
	e.ports.accepted = st.Accepted
	e.ports.mu.Unlock()
	if err := importCounters(&e.loops[0].departed, &st.Departed); err != nil {
		return err
	}
	for i, lc := range st.Listeners {
		if d := e.listeners[i].dgram; d != nil {
			d.unnamed = lc.Unnamed
		}
	}
	fdAt := func(i int) int {
		if i < 0 {
			return -1
		}
		return fds[i]
	}
	// A transport's own fds beyond the port's (vhost-user: its memory
	// regions and eventfds) are claimed by index, each once, none that
	// handover.Decode checked for a port already.
	used := make(map[int]bool)
	for _, p := range st.Ports {
		used[p.Fd] = true
		if p.Dgram != nil {
			used[p.Dgram.PathFd] = true
		}
	}
	claim := func(i int) (int, error) {
		switch {
		case i == -1:
			return -1, nil
		case i < 0 || i >= len(fds) || used[i]:
			return -1, fmt.Errorf("descriptor %d of %d given twice or out of range", i, len(fds))
		}
		used[i] = true
		return fds[i], nil
	}
	ports := append([]handover.Port(nil), st.Ports...)
	sort.Slice(ports, func(i, j int) bool { return ports[i].ID < ports[j].ID })
	// Ports given up: vhost-user guests a supervisor held whose rings
	// could not be resumed. Their MACs and bindings go with them.
	given := map[uint32]bool{}
	for i := range ports {
		hp := &ports[i]
		if hp.Kind == "tap" {
			p := e.ports.get(0)
			if p == nil || !p.host || hp.ID != 0 {
				return errors.New("the state has a TAP port this daemon has not")
			}
			if err := importCounters(&p.cnt, &hp.Counters); err != nil {
				return err
			}
			p.loop.adoptQueue(p, hp)
			continue
		}
		if hp.ID == 0 || int(hp.ID) >= len(e.ports.byID) {
			return fmt.Errorf("port %d is beyond this daemon's %d ports: start it with the same --max-clients", hp.ID, len(e.ports.byID))
		}
		p, err := e.adoptPort(hp, fdAt(hp.Fd), fdAt, claim)
		if err != nil && heldVhost(hp) {
			// After a crash, one guest whose memory says what no ring
			// could (it may have written it) must not keep the daemon
			// from starting: it reconnects, as without a supervisor.
			e.log.Warn("after the crash, a vhost-user guest could not be taken up: its socket is closed, it must reconnect",
				"port", hp.ID, "client", hp.Name, "err", err)
			given[hp.ID] = true
			if p != nil {
				p.loop.kill(p, err) // made, then failed: closed in the first round
				continue
			}
			e.notes.mu.Lock()
			e.notes.dropped = append(e.notes.dropped, hp.ID)
			e.notes.mu.Unlock()
			continue
		}
		if err != nil {
			return fmt.Errorf("port %d (%s %s): %w", hp.ID, hp.Kind, hp.Name, err)
		}
		if err := importCounters(&p.cnt, &hp.Counters); err != nil {
			return err
		}
		p.loop.adoptQueue(p, hp)
	}

	for _, m := range st.MACs {
		if given[m.Port] {
			continue
		}
		if e.ports.get(m.Port) == nil {
			return fmt.Errorf("MAC %012x on port %d, which is not adopted", m.MAC, m.Port)
		}
		e.macs.Learn(m.MAC, m.Port, now-m.AgeNs)
	}
	for _, b := range st.Bindings {
		if given[b.Port] {
			continue // bound again, if at all, by the rules in force
		}
		if e.ports.get(b.Port) == nil {
			return fmt.Errorf("binding %v on port %d, which is not adopted", b.IP, b.Port)
		}
		var until int64
		switch {
		case b.LeftNs < 0:
			until = math.MaxInt64
		case b.LeftNs > 0:
			until = now + b.LeftNs
		}
		// One that does not fit any more is left to be bound again by the
		// rules in force, which refuse what they would refuse anyway:
		// better than no daemon at all after a crash.
		if err := e.policy.Restore(secure.Binding{IP: b.IP, MAC: b.MAC, Port: b.Port, Source: secure.Source(b.Source), Expires: until}, now); err != nil {
			e.log.Warn("a binding of the previous daemon was not restored", "err", err)
		}
	}
	return nil
}

// adoptPort makes the port hp describes, on fd, a port of the loop a new
// one of its kind would go to.
func (e *Engine) adoptPort(hp *handover.Port, fd int, fdAt func(int) int, claim func(int) (int, error)) (*port, error) {
	monitor := hp.Kind == "monitor"
	if !e.ports.take(hp.ID, monitor) {
		return nil, errors.New("id given twice")
	}
	l := e.leastLoaded()
	if monitor || hp.Kind == "dgram" {
		l = e.loops[0] // the first loop serves monitors and the datagram listeners
	}
	p, err := l.adoptPort(hp, fd, fdAt, claim)
	if err != nil && p == nil {
		e.ports.unreserve(hp.ID, monitor)
	}
	return p, err
}

func (l *loop) adoptPort(hp *handover.Port, fd int, fdAt func(int) int, claim func(int) (int, error)) (*port, error) {
	e := l.e
	var t transport
	var d *dgramState
	var after func(*port) error
	switch hp.Kind {
	case "seqpacket":
		t = newMsgTransport(&l.io, fd)
	case "monitor":
		t = newMonitorTransport(&l.io, fd)
	case "stream":
		s := newStreamTransport(&l.io, fd, e.maxFrame)
		if len(hp.Unread) > len(s.buf) {
			return nil, fmt.Errorf("%d bytes unread, more than a frame", len(hp.Unread))
		}
		s.end = copy(s.buf, hp.Unread)
		s.pending = s.end > 0
		s.txOff = hp.TxOff
		t = s
	case "dgram":
		g := hp.Dgram
		if g == nil || g.Listener >= len(e.listeners) || e.listeners[g.Listener].dgram == nil {
			return nil, errors.New("a datagram client without its datagram listener")
		}
		ls := &e.listeners[g.Listener]
		d = &dgramState{key: g.Key, pathFd: fdAt(g.PathFd), dev: g.Dev, ino: g.Ino, lastSeen: l.now - g.IdleNs, listener: ls}
		if g.Via {
			if err := setViaAddr(d); err != nil {
				return nil, err
			}
			d.via = ls
		}
		t = newDgramTransport(&l.io, fd, d, e.cfg.Batch)
	default:
		var err error
		if t, after, err = l.adoptOther(hp, fd, claim); err != nil {
			return nil, err
		}
	}
	p := l.openPort(hp.ID, t, fd, hp.Name)
	p.pid, p.uid = hp.PID, hp.UID
	if hp.Kind == "monitor" {
		p.observer, p.mirror = true, hp.Mirror
		if err := l.adopt(p); err != nil {
			l.nports.Add(-1)
			return nil, err
		}
		if p.mirror {
			l.mirrors = append(l.mirrors, p)
			e.mirrored.Add(1)
		}
		return p, nil
	}
	if d != nil {
		p.dgram = d
		d.listener.dgram.peers[d.key] = p
	}
	if hp.Kind == "seqpacket" || d != nil && fd >= 0 {
		p.filterCookie = e.attachFilter(fd, p.name)
	}
	e.joinUser(p)
	if err := l.adopt(p); err != nil {
		e.leaveUser(p)
		l.nports.Add(-1)
		return nil, err
	}
	if after != nil {
		if err := after(p); err != nil {
			return p, err // made and live: the caller closes it
		}
	}
	return p, nil
}

// adoptQueue queues hp's carried frames on p, to be sent when the loop
// starts (run flushes first).
func (l *loop) adoptQueue(p *port, hp *handover.Port) {
	for _, b := range hp.Queue {
		var r ring.Ref
		var ok bool
		if len(b) <= l.pool.Size() {
			r, ok = l.pool.Get()
		} else {
			r, ok = l.pool.GetLarge()
		}
		if !ok || len(b) > len(l.pool.Buf(r)) || p.txq.Len() == p.txq.Cap() {
			if ok {
				l.pool.Release(r)
			}
			p.cnt.drops[DropPortClosed]++
			continue
		}
		copy(l.pool.Buf(r), b)
		l.pool.SetLen(r, len(b))
		p.txq.Push(r)
	}
	if p.txq.Len() > 0 && !p.dirty {
		p.dirty = true
		l.dirty = append(l.dirty, p)
	}
}
