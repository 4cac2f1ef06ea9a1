package engine

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/vhostguest"
	"github.com/vknetd/vknetd/mactable"
)

// The fairness rule with a vhost-user guest as the flooder: its ring holds
// frames it will not kick for again (the device says "more"), and its kick
// and socket fds may both be reported in one round. Still one batch per
// round, and the quiet client's frame crosses in the round it is sent.
func TestOneBatchPerRoundForAFloodingGuest(t *testing.T) {
	const batch = 2
	s := newTestSwitch(t, false, mactable.Config{}, func(c *Config) { c.Batch = batch })
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	fp, err := s.e.addClient(fds[1], VhostUser, "test")
	if err != nil {
		t.Fatal(err)
	}
	g, err := vhostguest.New(vhostguest.Options{QueueSize: 256, QuietTX: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	g.Attach(fds[0])
	// The guest's set-up waits for the switch's replies: the switch runs
	// its rounds here, on the test's goroutine, until the guest is up.
	started := make(chan error, 1)
	go func() { started <- g.Start() }()
	for up := false; !up; {
		select {
		case err := <-started:
			if err != nil {
				t.Fatalf("starting the guest's device: %v", err)
			}
			up = true
		default:
			if _, err := s.l.step(10 * time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
	}
	quiet, receiver := s.connect(), s.connect()
	flood := ethFrame(broadcast, mac(1), 0x0800, 60)
	floods := make([][]byte, 256)
	for i := range floods {
		floods[i] = flood
	}
	for round := 0; round < 50; round++ {
		offered := g.Send(floods, nil) // fills what the ring has room for
		if round == 0 && offered < 100*batch {
			t.Fatalf("the guest's ring took %d frames, want at least %d for this test", offered, 100*batch)
		}
		f := ethFrame(broadcast, mac(2), 0x0800, 60)
		f[20] = byte(round)
		quiet.send(t, f)

		before := fp.cnt.rxFrames
		if _, err := s.l.step(0); err != nil {
			t.Fatal(err)
		}
		if got := fp.cnt.rxFrames - before; got > batch {
			t.Fatalf("round %d: the guest was read for %d frames, more than one batch (%d)", round, got, batch)
		}
		var fromQuiet int
		for _, fr := range receiver.recv(t) {
			if fr[11] == 2 && fr[20] == byte(round) {
				fromQuiet++
			}
		}
		if fromQuiet != 1 {
			t.Fatalf("round %d: the receiver got %d frames of the quiet client after one round, want 1", round, fromQuiet)
		}
		quiet.recv(t)
	}
	if fp.cnt.rxFrames == 0 {
		t.Fatal("the guest's frames were never read")
	}
}
