package engine

import (
	"testing"
	"time"

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
