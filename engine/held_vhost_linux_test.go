package engine

import (
	"encoding/binary"
	"sort"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/handover"
	"github.com/vknetd/vknetd/internal/vhostguest"
)

// heldPorts plays the --supervise supervisor: it keeps each port's last
// notice with copies of its fds, as SCM_RIGHTS gives them, and lets go
// of a port noted gone.
type heldPorts struct {
	mu    sync.Mutex
	on    bool
	ports map[uint32]PortNotice
	gone  map[uint32]bool
}

func newHeldPorts() *heldPorts {
	return &heldPorts{on: true, ports: map[uint32]PortNotice{}, gone: map[uint32]bool{}}
}

func (h *heldPorts) notify(ns []PortNotice) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.on {
		return // the daemon died: nothing more is heard
	}
	for _, n := range ns {
		if old, ok := h.ports[n.ID]; ok {
			closeOwned(old.Fds)
			delete(h.ports, n.ID)
		}
		if n.Gone {
			h.gone[n.ID] = true
			continue
		}
		var fds []int
		for _, fd := range n.Fds {
			c, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				panic(err)
			}
			fds = append(fds, c)
		}
		n.Fds = fds
		h.ports[n.ID] = n
	}
}

// vhostHeld says how many vhost-user ports are held with a device state.
func (h *heldPorts) vhostHeld() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, p := range h.ports {
		if p.Port.Kind == "vhost-user" && len(p.Port.Vhost) > 0 {
			n++
		}
	}
	return n
}

func (h *heldPorts) wasGone(id uint32) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gone[id]
}

// record is what the supervisor hands a new daemon: every held port, its
// fds listed after the others' and its Fd moved to match; encoded and
// decoded as on the wire. The fds are the new engine's from then on.
func (h *heldPorts) record(t *testing.T) (*handover.Record, []int) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	var ids []uint32
	for id := range h.ports {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var eng handover.Engine
	var fds []int
	for _, id := range ids {
		n := h.ports[id]
		p := n.Port
		p.Fd += len(fds)
		fds = append(fds, n.Fds...)
		eng.Ports = append(eng.Ports, p)
	}
	h.ports = map[uint32]PortNotice{}
	ctl, err := unix.Dup(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(ctl) })
	rec := &handover.Record{Fds: len(fds) + 1,
		Daemon: handover.Daemon{Control: len(fds), Pidfile: -1, Metrics: -1, KeeperAlive: -1, Supervisor: -1, TAP: handover.TAP{Fd: -1}},
		Engine: eng}
	payload, err := handover.Encode(rec)
	if err != nil {
		t.Fatal(err)
	}
	got, err := handover.Decode(payload, len(fds)+1)
	if err != nil {
		t.Fatal(err)
	}
	return got, fds
}

// seqFrame is a frame from a to b carrying seq.
func seqFrame(seq int) []byte {
	f := ethFrame(mac(2), mac(1), 0x88b5, 200)
	binary.BigEndian.PutUint32(f[20:], uint32(seq))
	return f
}

// TestSupervisorHoldsVhostUserGuests: with a supervisor, a vhost-user
// guest's device state and fds are held as they change; the engine dies
// with its ring indices far past the held state's, and a new engine takes
// the guests up from what was held, resuming each ring where guest memory
// says: the frames sent since arrive once each, both ways, and no guest
// reconnects. Before, no vhost-user port was ever held: the test stops
// waiting for them.
func TestSupervisorHoldsVhostUserGuests(t *testing.T) {
	forWorkers(t, func(t *testing.T, workers int) { testHeldVhost(t, workers, false) })
}

// TestSupervisorGivesUpHostileVhostUserGuest: a guest that rewrote its TX
// ring's used idx to where no ring could be is not taken up after the
// crash; the other guest is; the daemon starts all the same, the hostile
// guest's socket closes (it may reconnect), and the supervisor is told to
// let go of it.
func TestSupervisorGivesUpHostileVhostUserGuest(t *testing.T) {
	forWorkers(t, func(t *testing.T, workers int) { testHeldVhost(t, workers, true) })
}

func testHeldVhost(t *testing.T, workers int, hostile bool) {
	old, path := newVhostSwitch(t, false, func(c *Config) { c.Workers = workers })
	h := newHeldPorts()
	old.NotifyPorts(h.notify)
	oldDone := make(chan error, 1)
	go func() { oldDone <- old.Run() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			old.Stop()
			<-oldDone
		}
	})
	a := startGuest(t, path, vhostguest.Options{})
	b := startGuest(t, path, vhostguest.Options{})
	for _, g := range []struct {
		g   *vhostguest.Guest
		who byte
	}{{a, 1}, {b, 2}} {
		if g.g.Send([][]byte{ethFrame(broadcast, mac(g.who), 0x88b5, 60)}, nil) != 1 {
			t.Fatal("hello not sent")
		}
	}
	receiveFrames(t, a, 1)
	receiveFrames(t, b, 1)
	waitFor(t, func() bool { return h.vhostHeld() == 2 })
	before, _ := old.Stats()

	// The rings move on far past what was held.
	var sent [][]byte
	for i := 0; i < 300; i++ {
		sent = append(sent, seqFrame(i))
	}
	for k := 0; k < len(sent); k += 30 {
		for n := k; n < k+30; {
			n += a.Send(sent[n:k+30], nil)
		}
		expectFrames(t, "b before the crash", receiveFrames(t, b, 30), sent[k:k+30]...)
	}

	// The daemon dies: its own fds close, the held copies keep the
	// guests' sockets open. What the stopping engine says is not heard.
	h.mu.Lock()
	h.on = false
	h.mu.Unlock()
	old.Stop()
	if err := <-oldDone; err != nil {
		t.Fatal(err)
	}
	stopped = true
	rec, fds := h.record(t)
	if hostile {
		_, availOff, usedOff := b.RingOffsets(1)
		mem := b.Mem()
		binary.LittleEndian.PutUint16(mem[usedOff+2:], binary.LittleEndian.Uint16(mem[availOff+2:])+1)
	}

	lfd, err := unix.Dup(old.cfg.Listeners[0].Fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(lfd) })
	cfg := old.cfg
	cfg.Listeners = []Listener{{Fd: lfd, Kind: VhostUser, Path: path}}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Adopt(&rec.Engine, fds); err != nil {
		t.Fatalf("adopting what the supervisor held: %v", err)
	}
	h2 := newHeldPorts()
	e.NotifyPorts(h2.notify)
	done := make(chan error, 1)
	go func() { done <- e.Run() }()
	t.Cleanup(func() {
		e.Stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})

	if hostile {
		bID := before.Ports[1].ID
		waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 1 && h2.wasGone(bID) })
		if !hungUp(b.SocketFD(), 5*time.Second) {
			t.Fatal("the hostile guest's socket is still open: it cannot know to reconnect")
		}
		if hungUp(a.SocketFD(), 0) {
			t.Fatal("the honest guest's socket closed")
		}
		return
	}
	after, _ := e.Stats()
	if after.Clients != 2 || after.Ports[0].ID != before.Ports[0].ID || after.Ports[1].ID != before.Ports[1].ID {
		t.Fatalf("after the crash: %d clients, ports %+v; before %+v", after.Clients, after.Ports, before.Ports)
	}
	var more [][]byte
	for i := 300; i < 340; i++ {
		more = append(more, seqFrame(i))
	}
	for k := 0; k < len(more); {
		k += a.Send(more[k:], nil)
	}
	expectFrames(t, "b after the crash", receiveFrames(t, b, len(more)), more...)
	back := ethFrame(mac(1), mac(2), 0x88b5, 300)
	if b.Send([][]byte{back}, nil) != 1 {
		t.Fatal("b could not send after the crash")
	}
	expectFrames(t, "a after the crash", receiveFrames(t, a, 1), back)
	if hungUp(a.SocketFD(), 0) || hungUp(b.SocketFD(), 0) {
		t.Fatal("a guest's socket closed")
	}
	// The new engine holds them again, for the next crash.
	waitFor(t, func() bool { return h2.vhostHeld() == 2 })
}

// hungUp says the peer of the socket fd closed it, now or within wait.
func hungUp(fd int, wait time.Duration) bool {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
	deadline := time.Now().Add(wait)
	for {
		n, err := unix.Poll(pfd, 100)
		if err == nil && n > 0 && pfd[0].Revents&(unix.POLLHUP|unix.POLLRDHUP) != 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// TestSupervisorLetsGoWhileAFrontEndAsks: a request from a held device's
// front-end may change what is held and wants a reply. The supervisor is
// told to let go of the device before the request is read, so by the time
// the front-end has its reply a daemon dying would not leave a successor
// holding the state of before (the front-end, waiting for nothing, would
// never reconnect); the request handled, the device is held again. Before,
// the supervisor kept the old state throughout.
func TestSupervisorLetsGoWhileAFrontEndAsks(t *testing.T) {
	e, path := newVhostSwitch(t, false, nil)
	h := newHeldPorts()
	e.NotifyPorts(h.notify)
	done := make(chan error, 1)
	go func() { done <- e.Run() }()
	t.Cleanup(func() {
		e.Stop()
		<-done
	})
	g := startGuest(t, path, vhostguest.Options{})
	waitFor(t, func() bool { return h.vhostHeld() == 1 })
	st, _ := e.Stats()
	id := st.Ports[0].ID
	if h.wasGone(id) {
		t.Fatal("let go of before any request")
	}
	if err := g.Message(vhostguest.ReqGetFeatures, vhostguest.FlagVersion1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Reply(vhostguest.ReqGetFeatures); err != nil {
		t.Fatal(err)
	}
	if !h.wasGone(id) {
		t.Fatal("the front-end has its reply and the supervisor still holds the state of before the request")
	}
	waitFor(t, func() bool { return h.vhostHeld() == 1 })
}
