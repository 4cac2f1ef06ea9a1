package engine

import (
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/vhostguest"
)

// coalescePair is two vhost-user guests on a switch with Config.Coalesce
// d, b known to the switch, the pair's first frame crossed.
func coalescePair(t *testing.T, d time.Duration, o vhostguest.Options) (a, b *vhostguest.Guest) {
	_, path := vhostSwitch(t, false, func(c *Config) { c.Coalesce = d })
	a = startGuest(t, path, o)
	b = startGuest(t, path, vhostguest.Options{})
	if b.Send([][]byte{ethFrame(broadcast, mac(2), 0x88b5, 60)}, nil) != 1 {
		t.Fatal("b could not send")
	}
	receiveFrames(t, a, 1)
	return a, b
}

// aToB is a frame from a (mac 1) to b (mac 2).
var aToB = ethFrame(mac(2), mac(1), 0x88b5, 60)

// sendBatch has a post n copies of frame to b at once (one kick) and b
// take them: a batch or more between two sleeps, which starts coalescing.
func sendBatch(t *testing.T, a, b *vhostguest.Guest, frame []byte, n int) {
	t.Helper()
	frames := make([][]byte, n)
	for i := range frames {
		frames[i] = frame
	}
	if got := a.Send(frames, nil); got != n {
		t.Fatalf("a posted %d of %d frames", got, n)
	}
	if got := receiveFrames(t, b, n); len(got) != n {
		t.Fatalf("b received %d of a's %d frames", len(got), n)
	}
}

// sendOneByOne has a send n copies of frame to b, each after the last
// arrived, and returns the kicks they cost a.
func sendOneByOne(t *testing.T, a, b *vhostguest.Guest, frame []byte, n int) uint64 {
	t.Helper()
	kicks := a.Kicks[1]
	for i := 0; i < n; i++ {
		if a.Send([][]byte{frame}, nil) != 1 {
			t.Fatalf("a could not send frame %d", i)
		}
		if got := receiveFrames(t, b, 1); len(got) != 1 {
			t.Fatalf("frame %d did not arrive", i)
		}
	}
	return a.Kicks[1] - kicks
}

// After a batch, a guest that goes on sending is not asked to kick: the
// loop looks at its ring every Coalesce instead, and each frame, posted
// without a kick, still crosses. Kicks come back after a whole Coalesce
// without a frame: the next frame kicks the sleeping switch, and the idle
// switch costs no CPU. With Coalesce 0 every one of these frames kicks
// (the test fails so: 20 kicks).
func TestCoalesceTakesFramesWithoutKicks(t *testing.T) {
	const every = 50 * time.Millisecond
	a, b := coalescePair(t, every, vhostguest.Options{})
	sendBatch(t, a, b, aToB, 32)
	// The one kick allowed: the ring was seen empty, with kicks on, before
	// the loop went to sleep and turned them off.
	if k := sendOneByOne(t, a, b, aToB, 20); k > 1 {
		t.Fatalf("20 frames sent one by one after a batch cost the guest %d kicks, want at most 1: the switch did not coalesce", k)
	}
	time.Sleep(4 * every)
	before := processCPU(t)
	time.Sleep(500 * time.Millisecond)
	if used := processCPU(t) - before; used > 50*time.Millisecond {
		t.Fatalf("the idle switch used %v of CPU in 500ms: it still looks at the rings", used)
	}
	if k := sendOneByOne(t, a, b, aToB, 1); k != 1 {
		t.Fatalf("a frame sent to the idle switch cost %d kicks, want 1: kicks stayed off after coalescing", k)
	}
}

// A guest that sends less than a batch between two sleeps is never
// coalesced: each frame kicks and is taken at once, as without Coalesce.
// (With every frame counted as a batch, the loop would coalesce after the
// first and the kicks would stop: the test fails so.)
func TestCoalesceLeavesSparseTrafficAlone(t *testing.T) {
	a, b := coalescePair(t, 50*time.Millisecond, vhostguest.Options{})
	if k := sendOneByOne(t, a, b, aToB, 20); k != 20 {
		t.Fatalf("20 frames sent one by one cost the guest %d kicks, want 20: a guest sending a frame at a time was coalesced", k)
	}
}

// A guest that fills half its ring while the switch sleeps between looks
// kicks: the loop takes its frames then, long before the next look (an
// hour away here), and the guest is not left with a full ring. Without
// that request the frames wait for the next look (the test fails so).
func TestCoalesceGuestKicksAtHalfRing(t *testing.T) {
	const size = 64
	a, b := coalescePair(t, time.Hour, vhostguest.Options{QueueSize: size})
	sendBatch(t, a, b, aToB, 32)
	// The loop now coalesces, kicks still allowed at the ring's end: the
	// next frame kicks, and the read that takes it, finding the ring
	// empty, asks for a kick half a ring on.
	sendOneByOne(t, a, b, aToB, 1)
	frame := ethFrame(mac(2), mac(1), 0x88b5, 60)
	kicks := a.Kicks[1]
	for i := 0; i < size/2; i++ {
		if a.Send([][]byte{frame}, nil) != 1 {
			t.Fatalf("a could not post frame %d", i)
		}
	}
	if k := a.Kicks[1] - kicks; k != 0 {
		t.Fatalf("half a ring posted to a coalescing switch cost %d kicks, want 0 before the entry half a ring on", k)
	}
	if a.Send([][]byte{frame}, nil) != 1 {
		t.Fatal("a could not post the frame half a ring on")
	}
	if k := a.Kicks[1] - kicks; k != 1 {
		t.Fatalf("the frame half a ring on cost %d kicks, want 1", k)
	}
	if got := receiveFrames(t, b, size/2+1); len(got) != size/2+1 {
		t.Fatalf("b received %d of %d frames: the kick at half the ring did not wake the switch", len(got), size/2+1)
	}
}

// Coalescing covers every TX ring of a multi-queue guest, whichever loop
// serves it: with 2 workers a guest's pairs are spread over both loops
// (spread.go), and frames it posts on each of its pairs after a batch
// there cost it no kicks.
func TestCoalesceMultiQueueGuestOnTwoWorkers(t *testing.T) {
	s := newMQSetup(t, func(c *Config) { c.Coalesce = 50 * time.Millisecond })
	if w := s.waitSpread(t); w != "1,0,1,0" {
		t.Fatalf("m's pairs served by loops %s, want 1,0,1,0", w)
	}
	mToA := ethFrame(mac(1), mac(2), 0x88b5, 60)
	for pair := 0; pair < 2; pair++ { // one on each loop
		s.m.Use(pair)
		sendBatch(t, s.m, s.a, mToA, 32)
		if k := sendOneByOne(t, s.m, s.a, mToA, 10); k > 1 {
			t.Fatalf("10 frames sent one by one on pair %d after a batch cost the guest %d kicks, want at most 1", pair, k)
		}
	}
}

// The listing counts how often a guest's kicks woke the switch (PortStats
// Kicks, vknetctl's KICKS): with every kick waking it (Coalesce 0) and
// each frame sent after the last arrived, every kick is read on its own,
// so the count is the guest's own, to the kick.
func TestListingCountsGuestKicks(t *testing.T) {
	e, path := vhostSwitch(t, false, func(c *Config) { c.Coalesce = 0 })
	a := startGuest(t, path, vhostguest.Options{})
	b := startGuest(t, path, vhostguest.Options{})
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 2 })
	if b.Send([][]byte{ethFrame(broadcast, mac(2), 0x88b5, 60)}, nil) != 1 {
		t.Fatal("b could not send")
	}
	receiveFrames(t, a, 1)
	if k := sendOneByOne(t, a, b, aToB, 10); k != 10 {
		t.Fatalf("10 frames one by one cost %d kicks, want 10", k)
	}
	st, err := e.Stats()
	if err != nil {
		t.Fatal(err)
	}
	var guests []PortStats
	for _, p := range st.Ports {
		if p.Kind == "vhost-user" {
			guests = append(guests, p)
		}
	}
	if len(guests) != 2 || guests[0].ID > guests[1].ID {
		t.Fatalf("listing: %+v", guests)
	}
	if got, want := guests[0].Kicks, a.Kicks[0]+a.Kicks[1]; got != want {
		t.Fatalf("a's port lists %d kicks; a kicked %d times (RX %d, TX %d)", got, want, a.Kicks[0], a.Kicks[1])
	}
	if got, want := guests[1].Kicks, b.Kicks[0]+b.Kicks[1]; got != want {
		t.Fatalf("b's port lists %d kicks; b kicked %d times", got, want)
	}
}
