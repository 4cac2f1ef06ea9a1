package engine

import (
	"bytes"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/hang"
	"github.com/vknetd/vknetd/mactable"
)

func withWorkers(n int) func(*Config) { return func(c *Config) { c.Workers = n } }

// numbered is a frame from src to dst that says which it is.
func numbered(dst, src [6]byte, i int) []byte {
	f := ethFrame(dst, src, 0x0800, 60)
	f[20], f[21] = byte(i>>8), byte(i)
	return f
}

func frameNumber(f []byte) int { return int(f[20])<<8 | int(f[21]) }

// A frame for a port of another loop crosses on the rings, unicast and
// flooded, in the order it was read, and every counter says exactly what
// happened, as with one loop.
func TestWorkersForwardAcrossLoops(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, withWorkers(2))
	l0, l1 := s.e.loops[0], s.e.loops[1]
	a, b := s.attachMemTo(l0), s.attachMemTo(l1)
	c, d := s.attachMemTo(l0), s.attachMemTo(l1)
	// b speaks first, so its MAC is known: then a's frames to it are
	// unicast, and a's broadcasts flood to both loops.
	b.send(ethFrame(broadcast, mac(2), 0x0800, 60))
	s.pump()
	for _, p := range []*memPeer{a, c, d} {
		if got := p.take(); len(got) != 1 {
			t.Fatalf("port %d got %d of b's broadcast, want 1", p.port.id, len(got))
		}
	}
	var sent [][]byte
	for i := 0; i < 600; i++ {
		dst := mac(2)
		if i%3 == 0 {
			dst = broadcast
		}
		sent = append(sent, numbered(dst, mac(1), i))
	}
	a.send(sent...)
	s.pump()
	got := b.take()
	if len(got) != len(sent) {
		t.Fatalf("b got %d of a's %d frames", len(got), len(sent))
	}
	for i := range got {
		if !bytes.Equal(got[i], sent[i]) {
			t.Fatalf("b's frame %d is a's %d: unicast and flood frames from one port changed order between loops", i, frameNumber(got[i]))
		}
	}
	for _, p := range []*memPeer{c, d} {
		if got := p.take(); len(got) != 200 {
			t.Fatalf("port %d (loop %d) got %d of a's 200 broadcasts", p.port.id, p.port.loop.index, len(got))
		}
	}
	if a.port.cnt.rxFrames != 600 || b.port.cnt.txFrames != 601-1 || c.port.cnt.txFrames != 201 || d.port.cnt.txFrames != 201 {
		t.Fatalf("counters: a rx %d (600), b tx %d (600), c tx %d (201), d tx %d (201)",
			a.port.cnt.rxFrames, b.port.cnt.txFrames, c.port.cnt.txFrames, d.port.cnt.txFrames)
	}
	st := s.e.stats()
	var rx, tx uint64
	for _, p := range st.Ports {
		rx += p.RxFrames
		tx += p.TxFrames
		if len(p.Drops) != 0 {
			t.Errorf("port %d dropped %v", p.ID, p.Drops)
		}
	}
	if len(st.Ports) != 4 || rx != 601 || tx != 3+600+2*200 {
		t.Fatalf("Stats: %d ports, %d received (601), %d sent (%d)", len(st.Ports), rx, tx, 3+600+2*200)
	}
	if free := st.PoolFree; free != st.PoolCap {
		t.Fatalf("%d of %d buffers free once every frame was sent: a reference was lost between loops", free, st.PoolCap)
	}
}

// A loop that does not take its frames (its thread not scheduled) holds
// the others back instead of losing frames: their rings to it fill to a
// read's room and they stop reading, and once it runs every frame
// arrives, in order.
func TestWorkersBackPressureLosesNothing(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, withWorkers(2))
	l0, l1 := s.e.loops[0], s.e.loops[1]
	a, b := s.attachMemTo(l0), s.attachMemTo(l1)
	b.send(ethFrame(broadcast, mac(2), 0x0800, 60))
	s.pump()
	a.take()
	var sent [][]byte
	for i := 0; i < 3000; i++ {
		sent = append(sent, numbered(mac(2), mac(1), i))
	}
	a.send(sent...)
	for i := 0; i < 200; i++ { // loop 1 sleeps meanwhile
		if _, err := l0.step(0); err != nil {
			t.Fatal(err)
		}
	}
	if rx := a.port.cnt.rxFrames; rx >= 3000 || rx < crossRingLen/2 {
		t.Fatalf("loop 0 read %d of a's frames with loop 1 asleep: want it stopped short of its ring's %d", rx, crossRingLen)
	}
	s.pump()
	got := b.take()
	if len(got) != len(sent) || a.port.cnt.drops[DropWorkerRingFull] != 0 {
		t.Fatalf("b got %d of %d frames; worker-ring-full %d", len(got), len(sent), a.port.cnt.drops[DropWorkerRingFull])
	}
	for i := range got {
		if frameNumber(got[i]) != i {
			t.Fatalf("frame %d is a's %d", i, frameNumber(got[i]))
		}
	}
}

// A frame handed to a loop whose port closed meanwhile is dropped there
// and counted as port-closed, like a frame in the queue of a port that
// closes.
func TestWorkersFrameForClosedPortIsCounted(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, withWorkers(2))
	a, b := s.attachMemTo(s.e.loops[0]), s.attachMemTo(s.e.loops[1])
	b.send(ethFrame(broadcast, mac(2), 0x0800, 60))
	s.pump()
	a.send(numbered(mac(2), mac(1), 1))
	if _, err := s.e.loops[0].step(0); err != nil { // a's frame is on the ring to b's loop
		t.Fatal(err)
	}
	b.port.dead = true
	s.e.loops[1].reap()
	s.pump()
	if got := s.e.stats().Departed.Drops; len(got) != 1 || got[0] != (DropCount{"port-closed", 1}) {
		t.Fatalf("departed drops %v, want port-closed 1", got)
	}
	if st := s.e.stats(); st.PoolFree != st.PoolCap {
		t.Fatalf("%d of %d buffers free", st.PoolFree, st.PoolCap)
	}
}

// Clients go to the loop with the fewest ports.
func TestWorkersAcceptLeastLoaded(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, withWorkers(3))
	for i := 0; i < 7; i++ {
		s.connect()
		s.pump()
	}
	for _, l := range s.e.loops {
		if n := len(l.live); n < 2 || n > 3 {
			t.Fatalf("loop %d has %d of 7 clients", l.index, n)
		}
	}
}

// Secure mode's bindings are one table for every loop: an address bound
// by a client of one loop cannot be taken by a client of another.
func TestWorkersShareSecureBindings(t *testing.T) {
	s := newTestSwitch(t, true, mactable.Config{}, withWorkers(2))
	a, b := s.connect(), s.connect()
	s.pump()
	if a.port.loop == b.port.loop {
		t.Fatal("both clients on one loop")
	}
	ip := [4]byte{198, 18, 0, 10}
	a.send(t, ipv4UDP(broadcast, mac(1), ip, [4]byte{198, 18, 255, 255}))
	s.pump()
	b.send(t, ipv4UDP(broadcast, mac(2), ip, [4]byte{198, 18, 255, 255}))
	b.send(t, ipv4UDP(broadcast, mac(1), [4]byte{198, 18, 0, 11}, [4]byte{198, 18, 255, 255})) // a's MAC
	s.pump()
	if got := b.port.cnt.secureDrops; got == ([len(got)]uint64{}) {
		t.Fatal("b took a's address or MAC from another loop")
	}
	if n := b.port.cnt.drops[DropMACInUse]; n != 1 {
		t.Fatalf("src-mac-in-use %d, want 1", n)
	}
	if got := len(a.recv(t)); got != 0 {
		t.Fatalf("a got %d of b's refused frames", got)
	}
}

// No allocation per frame, with one loop and with two, the frame crossing.
func TestWorkersForwardingAllocatesNothing(t *testing.T) {
	for _, workers := range []int{1, 2} {
		for _, secureMode := range []bool{false, true} {
			s := newTestSwitch(t, secureMode, mactable.Config{}, withWorkers(workers))
			a, b := s.connect(), s.connect()
			s.pump()
			if workers == 2 && a.port.loop == b.port.loop {
				t.Fatal("both clients on one loop")
			}
			frame := ipv4UDP(mac(2), mac(1), [4]byte{198, 18, 0, 10}, [4]byte{198, 18, 0, 20})
			b.send(t, ipv4UDP(broadcast, mac(2), [4]byte{198, 18, 0, 20}, [4]byte{198, 18, 255, 255}))
			s.pump()
			a.recv(t)
			buf := make([]byte, 2048)
			allocs := testing.AllocsPerRun(500, func() {
				unix.Write(a.fd, frame)
				for _, l := range s.e.loops {
					l.step(0)
				}
				unix.Read(b.fd, buf)
			})
			if allocs != 0 {
				t.Errorf("%d workers, secure=%v: %.1f allocations per frame", workers, secureMode, allocs)
			}
			if b.port.cnt.txFrames < 500 {
				t.Fatalf("%d workers: only %d frames reached b", workers, b.port.cnt.txFrames)
			}
		}
	}
}

// Run with two workers, as the daemon does: clients accepted while it
// runs go to both loops, frames cross between them with the loops asleep
// in their pollers (woken by the rings), and Stats, gathered from both
// loops, counts every frame.
func TestWorkersRun(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	s := newTestSwitch(t, false, mactable.Config{}, withWorkers(2))
	e := s.e
	runErr := make(chan error, 1)
	go func() { runErr <- e.Run() }()
	var clients []int
	for i := 0; i < 4; i++ {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.SetNonblock(fds[1], true)
		var aerr error
		if err := e.do(func() { _, aerr = e.addClient(fds[1], Seqpacket, "test") }); err != nil || aerr != nil {
			t.Fatal(err, aerr)
		}
		clients = append(clients, fds[0])
		defer unix.Close(fds[0])
	}
	// A request to every loop runs after it has adopted the clients posted
	// to it (adoptInbox comes first on a wake-up): all four are connected.
	if _, err := e.Stats(); err != nil {
		t.Fatal(err)
	}
	// Every client says who it is, then sends each other one frame.
	for i, fd := range clients {
		unix.Write(fd, ethFrame(broadcast, mac(byte(i+1)), 0x0800, 60))
	}
	want := make([]int, len(clients))
	for i := range want {
		want[i] = len(clients) - 1
	}
	waitFrames(t, clients, want)
	for i, fd := range clients {
		for j := range clients {
			if j != i {
				unix.Write(fd, numbered(mac(byte(j+1)), mac(byte(i+1)), i))
			}
		}
	}
	waitFrames(t, clients, want)
	st, err := e.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Ports) != 4 || st.Clients != 4 {
		t.Fatalf("Stats lists %d ports, %d clients; want 4", len(st.Ports), st.Clients)
	}
	for _, p := range st.Ports {
		if p.RxFrames != 4 || p.TxFrames != 6 || len(p.Drops) != 0 {
			t.Errorf("port %d: rx %d (4), tx %d (6), drops %v", p.ID, p.RxFrames, p.TxFrames, p.Drops)
		}
	}
	for _, l := range e.loops {
		if n := l.nports.Load(); n != 2 {
			t.Errorf("loop %d has %d of the 4 clients", l.index, n)
		}
	}
	e.Stop()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Stop")
	}
}

// waitFrames reads from each fd until it has had want[i] frames.
func waitFrames(t *testing.T, fds []int, want []int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	got := make([]int, len(fds))
	buf := make([]byte, 2048)
	for i, fd := range fds {
		for got[i] < want[i] {
			if time.Now().After(deadline) {
				t.Fatalf("client %d got %d of %d frames", i, got[i], want[i])
			}
			if _, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT); err == nil {
				got[i]++
			} else {
				time.Sleep(time.Millisecond)
			}
		}
	}
}

// A unicast frame that nothing else on its loop holds crosses with its
// read's reference: the other loop becomes its one owner, and neither
// counts its references atomically. A flood keeps a reference on its
// loop (a queue of one of its ports may still hold it), so its buffer is
// counted atomically while both loops may let go of it.
func TestWorkersUnicastHandsOverItsOnlyReference(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, withWorkers(2))
	l0, l1 := s.e.loops[0], s.e.loops[1]
	a, b := s.attachMemTo(l0), s.attachMemTo(l1)
	b.send(ethFrame(broadcast, mac(2), 0x0800, 60))
	s.pump()
	a.take()
	a.send(ethFrame(mac(2), mac(1), 0x0800, 60), ethFrame(broadcast, mac(1), 0x0800, 60))
	if _, err := l0.step(0); err != nil {
		t.Fatal(err)
	}
	ring := l0.cross.to[1]
	if got := ring.tail.Load() - ring.head.Load(); got != 2 {
		t.Fatalf("%d entries on the ring to loop 1, want 2", got)
	}
	unicast, flood := ring.entries[ring.head.Load()%crossRingLen], ring.entries[(ring.head.Load()+1)%crossRingLen]
	if !l1.pool.Sole(unicast.ref) {
		t.Fatal("the unicast frame crossed with a reference of its own, counted atomically: its loop kept one")
	}
	if l1.pool.Sole(flood.ref) {
		t.Fatal("the flooded frame crossed counted plainly, though its loop may release it too")
	}
	s.pump()
	if got := b.take(); len(got) != 2 {
		t.Fatalf("b got %d of a's 2 frames", len(got))
	}
	if st := s.e.stats(); st.PoolFree != st.PoolCap {
		t.Fatalf("%d of %d buffers free once every frame was sent", st.PoolFree, st.PoolCap)
	}
}

// A loop held back by a full ring to another loop sleeps in its poller
// rather than polling in a spin, and the other loop wakes it when it
// takes frames.
func TestWorkersHeldBackLoopSleepsUntilWoken(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, withWorkers(2))
	l0, l1 := s.e.loops[0], s.e.loops[1]
	a, b := s.attachMemTo(l0), s.attachMemTo(l1)
	b.send(ethFrame(broadcast, mac(2), 0x0800, 60))
	s.pump()
	a.take()
	var sent [][]byte
	for i := 0; i < 3000; i++ {
		sent = append(sent, numbered(mac(2), mac(1), i))
	}
	a.send(sent...)
	for i := 0; i < 200; i++ { // loop 1 sleeps meanwhile
		if _, err := l0.step(0); err != nil {
			t.Fatal(err)
		}
	}
	if l0.crossRoom() {
		t.Fatal("loop 0 is not held back by its ring to loop 1")
	}
	if d := l0.timeout(); d == 0 {
		t.Fatal("loop 0, held back by loop 1, would poll again at once: a spin")
	}
	if _, err := l1.step(0); err != nil {
		t.Fatal(err)
	}
	reports, err := l0.step(0)
	if err != nil {
		t.Fatal(err)
	}
	if reports == 0 {
		t.Fatal("loop 1 took frames and did not wake loop 0")
	}
	s.pump()
	if got := b.take(); len(got) != len(sent) {
		t.Fatalf("b got %d of %d frames", len(got), len(sent))
	}
}
