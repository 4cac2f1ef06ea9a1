package engine

import (
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/vhostguest"
	"github.com/vknetd/vknetd/mactable"
)

// The fairness rule with a vhost-user guest as the flooder: its ring holds
// frames it will not kick for again (the device says "more"), and its kick
// and socket fds may both be reported in one round. Still one read per
// round, and the quiet client's frame crosses in the round it is sent. The
// read is a batch, or vhostReadBudget on a switch that serves vhost-user
// (a listener of the kind), whose pool counts a read as that.
func TestOneBatchPerRoundForAFloodingGuest(t *testing.T) {
	const batch = 2
	t.Run("batch", func(t *testing.T) { floodOneReadPerRound(t, batch, false) })
	t.Run("vhost-user served", func(t *testing.T) { floodOneReadPerRound(t, batch, true) })
}

func floodOneReadPerRound(t *testing.T, batch int, served bool) {
	read := batch
	s := newTestSwitch(t, false, mactable.Config{}, func(c *Config) {
		c.Batch = batch
		if served {
			c.Listeners = []Listener{{Fd: listenVhostUser(t), Kind: VhostUser}}
		}
	})
	if served {
		read = vhostReadBudget
	}
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
		if round == 0 && offered < 3*read {
			t.Fatalf("the guest's ring took %d frames, want at least %d for this test", offered, 3*read)
		}
		f := ethFrame(broadcast, mac(2), 0x0800, 60)
		f[20] = byte(round)
		quiet.send(t, f)

		before := fp.cnt.rxFrames
		if _, err := s.l.step(0); err != nil {
			t.Fatal(err)
		}
		if got := fp.cnt.rxFrames - before; got > uint64(read) || round == 0 && got != uint64(read) {
			t.Fatalf("round %d: the guest was read for %d frames, want one read of %d", round, got, read)
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

// listenVhostUser is a listening socket for a switch's vhost-user
// listener, closed at the test's end; nothing connects to it.
func listenVhostUser(t *testing.T) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: filepath.Join(t.TempDir(), "vhost")}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 1); err != nil {
		t.Fatal(err)
	}
	return fd
}
