package engine

import (
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/hang"
	"github.com/vknetd/vknetd/mactable"
)

// Frames one loop handed another and that loop has not taken yet are
// neither lost nor sent twice across a handover: the freeze takes them
// from the rings into their destinations' queues (and sends them), and
// the frames still in the client's socket go through the new switch, in
// order.
func TestFreezeTakesFramesBetweenLoops(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, withWorkers(2))
	a, b := s.connect(), s.connect()
	s.pump()
	if a.port.loop == b.port.loop {
		t.Fatal("a and b on one loop")
	}
	b.send(t, ethFrame(broadcast, mac(2), 0x0800, 60))
	s.pump()
	a.recv(t)
	var sent [][]byte
	for i := 0; i < 100; i++ {
		f := numbered(mac(2), mac(1), i)
		sent = append(sent, f)
		a.send(t, f)
	}
	// a's loop reads one batch and hands it to b's loop, which does not
	// run before the freeze.
	if _, err := a.port.loop.step(0); err != nil {
		t.Fatal(err)
	}
	if !b.port.loop.crossPending() {
		t.Fatal("no frames waiting between the loops: the test tests nothing")
	}
	n := handOver(t, s)
	n.pump()
	got := b.recv(t)
	if len(got) != len(sent) {
		t.Fatalf("b got %d of a's %d frames across the handover", len(got), len(sent))
	}
	for i := range got {
		if frameNumber(got[i]) != i {
			t.Fatalf("b's frame %d is a's %d", i, frameNumber(got[i]))
		}
	}
}

// Freeze stops every loop of a running switch, each between rounds on its
// own goroutine: nothing is forwarded while it is frozen, and Thaw starts
// them all again. Run with -race, it also checks that the state is
// written with no loop running.
func TestFreezeStopsAndThawRestartsEveryLoop(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	s := newTestSwitch(t, false, mactable.Config{}, withWorkers(2))
	e := s.e
	var notices []PortNotice
	var mu sync.Mutex
	e.NotifyPorts(func(ns []PortNotice) {
		mu.Lock()
		notices = append(notices, ns...)
		mu.Unlock()
	})
	runErr := make(chan error, 1)
	go func() { runErr <- e.Run() }()
	defer func() {
		e.Stop()
		if err := <-runErr; err != nil {
			t.Error(err)
		}
	}()
	var clients []int
	var ports []*port
	for i := 0; i < 4; i++ {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.SetNonblock(fds[1], true)
		var aerr error
		var p *port
		if err := e.do(func() { p, aerr = e.addClient(fds[1], Seqpacket, "test") }); err != nil || aerr != nil {
			t.Fatal(err, aerr)
		}
		clients = append(clients, fds[0])
		ports = append(ports, p)
	}
	defer func() {
		for _, fd := range clients {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}()
	for i, fd := range clients {
		unix.Write(fd, ethFrame(broadcast, mac(byte(i+1)), 0x0800, 60))
	}
	waitFrames(t, clients, []int{3, 3, 3, 3})
	for round := 0; round < 3; round++ {
		f, err := e.Freeze(0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Thaw() // a failure below must not leave Stop waiting
		if f.Refused != nil || len(f.State.Ports) != 4 || len(f.Fds) != 4 || len(f.State.MACs) != 4 {
			t.Fatalf("frozen state: refused %v, %d ports, %d fds, %d MACs; want 4 of each",
				f.Refused, len(f.State.Ports), len(f.Fds), len(f.State.MACs))
		}
		// Every client sends each other client one frame: none may get
		// through while frozen, all once thawed.
		for i, fd := range clients {
			for j := range clients {
				if j != i {
					unix.Write(fd, numbered(mac(byte(j+1)), mac(byte(i+1)), i))
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
		buf := make([]byte, 2048)
		for i, fd := range clients {
			if _, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT); err == nil {
				t.Fatalf("client %d got a frame while the switch was frozen", i)
			}
		}
		f.Thaw()
		waitFrames(t, clients, []int{3, 3, 3, 3})
	}

	// The supervisor heard of every client, from whichever loop owns it,
	// and of one of the second loop's that hangs up.
	if ports[1].loop.index != 1 {
		t.Fatalf("client 1 is on loop %d", ports[1].loop.index)
	}
	gone := ports[1].id
	unix.Close(clients[1])
	clients[1] = -1
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(notices)
		mu.Unlock()
		if n == 5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	ids := map[uint32]bool{}
	for i, n := range notices {
		switch {
		case i == 4 && (!n.Gone || n.ID != gone):
			t.Fatalf("last notice %+v, want port %d gone", n, gone)
		case i < 4 && (n.Gone || len(n.Fds) != 1):
			t.Fatalf("notice %+v", n)
		}
		ids[n.ID] = true
	}
	if len(ids) != 4 || len(notices) != 5 {
		t.Fatalf("the supervisor heard of %d clients, want 4: %+v", len(ids), notices)
	}
}
