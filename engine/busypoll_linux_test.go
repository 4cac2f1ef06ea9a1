package engine

import (
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/mactable"
	"github.com/vknetd/vknetd/secure"

	"github.com/vknetd/vknetd/internal/vhostguest"
)

// busyPollPair is two vhost-user guests on a switch with Config.BusyPoll
// d, b known to the switch (it spoke first), a's frame to b crossing.
func busyPollPair(t *testing.T, d time.Duration) (e *Engine, a, b *vhostguest.Guest) {
	e, path := vhostSwitch(t, false, func(c *Config) { c.BusyPoll = d })
	a = startGuest(t, path, vhostguest.Options{})
	b = startGuest(t, path, vhostguest.Options{})
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 2 })
	if b.Send([][]byte{ethFrame(broadcast, mac(2), 0x88b5, 60)}, nil) != 1 {
		t.Fatal("b could not send")
	}
	receiveFrames(t, a, 1)
	return e, a, b
}

// While the loop busy-polls, a guest's frames are taken from its ring
// without a kick: after the first, the device leaves the guest's kicks
// off, and each later frame, posted without one, still crosses. Without
// busy-polling every one of these frames, sent to a ring the switch had
// emptied, kicks (the test fails with BusyPoll 0: 20 kicks).
func TestBusyPollTakesFramesWithoutKicks(t *testing.T) {
	_, a, b := busyPollPair(t, 5*time.Second)
	frame := ethFrame(mac(2), mac(1), 0x88b5, 60)
	if a.Send([][]byte{frame}, nil) != 1 {
		t.Fatal("a could not send")
	}
	receiveFrames(t, b, 1)
	kicks := a.Kicks[1]
	const n = 20
	for i := 0; i < n; i++ {
		if a.Send([][]byte{frame}, nil) != 1 {
			t.Fatalf("a could not send frame %d", i)
		}
		if got := receiveFrames(t, b, 1); len(got) != 1 {
			t.Fatalf("frame %d, posted while the switch polls, did not arrive", i)
		}
	}
	if k := a.Kicks[1] - kicks; k != 0 {
		t.Fatalf("%d frames posted while the switch busy-polls cost the guest %d kicks, want 0", n, k)
	}
}

// BusyPoll after frames last moved the loop sleeps again: the process
// then uses next to no CPU (as TestIdleVhostUserGuestsCostNoCPU without
// busy-polling), and the guest's kicks are back on, so its next frame,
// sent to a sleeping switch, kicks it awake and crosses.
func TestBusyPollSleepsAfterTheDuration(t *testing.T) {
	_, a, b := busyPollPair(t, 50*time.Millisecond)
	frame := ethFrame(mac(2), mac(1), 0x88b5, 60)
	for i := 0; i < 3; i++ {
		a.Send([][]byte{frame}, nil)
		receiveFrames(t, b, 1)
	}
	time.Sleep(200 * time.Millisecond) // past the duration
	before := processCPU(t)
	time.Sleep(500 * time.Millisecond)
	if used := processCPU(t) - before; used > 50*time.Millisecond {
		t.Fatalf("the switch used %v of CPU in 500ms, 150ms after its 50ms of busy-polling ended: it still polls", used)
	}
	kicks := a.Kicks[1]
	if a.Send([][]byte{frame}, nil) != 1 {
		t.Fatal("a could not send")
	}
	if a.Kicks[1] == kicks {
		t.Fatal("a frame sent to a sleeping switch did not kick: kicks stayed off after busy-polling")
	}
	if got := receiveFrames(t, b, 1); len(got) != 1 {
		t.Fatal("the frame sent after busy-polling ended did not arrive")
	}
}

// A loop with no vhost-user guest has no rings to poll: with BusyPoll set
// and frames moving between socket clients, it still sleeps between
// them, and the process stays near idle while they are quiet.
func TestBusyPollWithoutRingsSleeps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sock")
	lfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(lfd)
	if err := unix.Bind(lfd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(lfd, 16); err != nil {
		t.Fatal(err)
	}
	policy, _ := secure.New(secure.Config{})
	e, err := New(Config{TapFd: -1, MTU: 1500, Policy: policy, Logger: quietLogger(), BusyPoll: 5 * time.Second,
		MACTable:  mactable.Config{Capacity: 64, PortLimit: 8, MaxAge: time.Minute},
		Listeners: []Listener{{Fd: lfd, Kind: Seqpacket, Path: path}}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run() }()
	defer func() {
		e.Stop()
		<-done
	}()
	a, b := dialSeqpacket(t, path, 5*time.Second), dialSeqpacket(t, path, 5*time.Second)
	defer unix.Close(a)
	defer unix.Close(b)
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 2 })
	f := ethFrame(broadcast, mac(1), 0x0800, 300)
	buf := make([]byte, 2048)
	for i := 0; i < 5; i++ {
		if _, err := unix.Write(a, f); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Read(b, buf); err != nil {
			t.Fatal(err)
		}
	}
	before := processCPU(t)
	time.Sleep(500 * time.Millisecond) // well inside the 5s BusyPoll
	if used := processCPU(t) - before; used > 50*time.Millisecond {
		t.Fatalf("a loop with only socket clients used %v of CPU in 500ms after its frames: it polls with no rings to poll", used)
	}
}

// Busy-polling looks at every TX ring of a multi-queue guest: frames a
// guest with 4 pairs posts on its third pair, without kicks once the
// loop polls, still cross.
func TestBusyPollMultiQueueGuest(t *testing.T) {
	e, path := vhostSwitch(t, false, func(c *Config) { c.BusyPoll = 5 * time.Second })
	a := startGuest(t, path, vhostguest.Options{})
	m := startGuest(t, path, vhostguest.Options{QueuePairs: 4})
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 2 })
	if a.Send([][]byte{ethFrame(broadcast, mac(1), 0x88b5, 60)}, nil) != 1 {
		t.Fatal("a could not send")
	}
	receiveFrames(t, m, 1)
	m.Use(2)
	frame := ethFrame(mac(1), mac(2), 0x88b5, 60)
	if m.Send([][]byte{frame}, nil) != 1 {
		t.Fatal("m could not send")
	}
	receiveFrames(t, a, 1)
	kicks := m.Kicks[1]
	const n = 20
	for i := 0; i < n; i++ {
		if m.Send([][]byte{frame}, nil) != 1 {
			t.Fatalf("m could not send frame %d", i)
		}
		if got := receiveFrames(t, a, 1); len(got) != 1 {
			t.Fatalf("frame %d, posted on pair 2 while the switch polls, did not arrive", i)
		}
	}
	if k := m.Kicks[1] - kicks; k != 0 {
		t.Fatalf("%d frames on pair 2 while the switch busy-polls cost %d kicks, want 0", n, k)
	}
}

// ringedMem is a memTransport with rings a polling loop looks at, which
// counts the looks it was asked for.
type ringedMem struct {
	*memTransport
	readLooks, writeLooks int
}

func (t *ringedMem) caps() transportCaps {
	c := t.memTransport.caps()
	c.rings = t
	return c
}

func (t *ringedMem) pollRings(wantRead, wantWrite bool) (read, write bool) {
	if wantRead {
		t.readLooks++
	}
	if wantWrite {
		t.writeLooks++
	}
	return wantRead && len(t.in) > 0, wantWrite && t.room != 0
}

func (t *ringedMem) busyPoll(bool) (bool, error) { return false, nil }

// A polling loop looks at a ring only for what it will act on: each look
// loads a line the guest writes. A port carried to the next round (it
// holds more than a batch) is read then anyway, so its TX ring is not
// looked at; a port with nothing queued for it is not looked at for room.
// (With both looks taken every round, as before, the test fails.)
func TestPollingLooksOnlyAtWhatItWillUse(t *testing.T) {
	const batch = 4
	s := newTestSwitch(t, false, mactable.Config{}, func(c *Config) { c.Batch = batch })
	ta, tb := &ringedMem{memTransport: s.newMemTransport(s.l)}, &ringedMem{memTransport: s.newMemTransport(s.l)}
	a := &memPeer{t: ta.memTransport, port: s.attachTransport(s.l, ta, ta.bell[0])}
	b := &memPeer{t: tb.memTransport, port: s.attachTransport(s.l, tb, tb.bell[0])}
	b.send(ethFrame(broadcast, mac(2), 0x88b5, 60)) // b's MAC known
	s.l.step(0)
	a.take()
	var frames [][]byte
	for i := 0; i < 10*batch; i++ {
		frames = append(frames, ethFrame(mac(2), mac(1), 0x88b5, 60))
	}
	a.t.in = append(a.t.in, frames...) // posted without a kick, as to a polling loop
	s.l.polling = true
	for round := 0; round < 3; round++ {
		s.l.serveRound(nil)
	}
	if !a.port.readAgain {
		t.Fatal("a, with frames left after 3 batches, is not carried")
	}
	if ta.readLooks != 1 {
		t.Fatalf("a's TX ring looked at %d times in 3 rounds, want 1: once carried it is read anyway", ta.readLooks)
	}
	if ta.writeLooks != 0 {
		t.Fatalf("a's RX ring looked at %d times with nothing queued for a, want 0", ta.writeLooks)
	}
	if got := len(b.take()); got != 3*batch {
		t.Fatalf("b got %d frames in 3 rounds, want %d", got, 3*batch)
	}
	s.l.polling = false
}

// A guest whose rings are set up while the loop polls is polled as the
// others are: once its first frame is taken, it posts without kicking.
// Coalescing can go on for as long as other guests send, so a guest that
// joins meanwhile would otherwise kick for every frame (the test fails so:
// 20 kicks).
func TestPollingLoopPollsAGuestThatJoinsMeanwhile(t *testing.T) {
	e, a, _ := busyPollPair(t, 5*time.Second)
	path := e.cfg.Listeners[0].Path
	c := startGuest(t, path, vhostguest.Options{})
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 3 })
	frame := ethFrame(mac(1), mac(3), 0x88b5, 60)
	kicks := c.Kicks[1]
	for i := 0; i < 20; i++ {
		if c.Send([][]byte{frame}, nil) != 1 {
			t.Fatalf("c could not send frame %d", i)
		}
		if got := receiveFrames(t, a, 1); len(got) != 1 {
			t.Fatalf("c's frame %d did not arrive", i)
		}
	}
	if k := c.Kicks[1] - kicks; k > 1 {
		t.Fatalf("20 frames from a guest that joined while the loop polls cost it %d kicks, want at most 1 (its first)", k)
	}
}
