package vhostuser

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/vhostguest"
)

// pair is a device and a guest talking over a socketpair, both driven by
// the test goroutine except while serve runs the device's side.
type pair struct {
	d   *Device
	g   *vhostguest.Guest
	cfg Config // for the devices connect makes
}

func socketpair(t testing.TB) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fds[0], fds[1]
}

// newPair connects a new guest to a new device and starts it.
func newPair(t testing.TB, o vhostguest.Options) *pair {
	t.Helper()
	return newPairConfig(t, o, Config{})
}

// newPairConfig is newPair with a device configured by cfg (its Note
// logs to t).
func newPairConfig(t testing.TB, o vhostguest.Options, cfg Config) *pair {
	t.Helper()
	g, err := vhostguest.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	cfg.Note = func(s string) { t.Log(s) }
	p := &pair{g: g, cfg: cfg}
	p.connect(t)
	return p
}

// connect gives the guest a new connection to a new device and runs the
// guest's Start against it.
func (p *pair) connect(t testing.TB) {
	t.Helper()
	a, b := socketpair(t)
	d, err := NewDevice(a, p.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	p.d = d
	p.g.Attach(b)
	if err := serve(d, p.g.Start); err != nil {
		t.Fatal(err)
	}
	if !d.Ready() {
		t.Fatal("device not ready after Start")
	}
}

// serve runs the device's socket handling in a goroutine while fn plays
// the front-end, and returns the first error of either.
func serve(d *Device, fn func() error) error {
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			pfd := []unix.PollFd{{Fd: int32(d.SocketFD()), Events: unix.POLLIN}}
			if _, err := unix.Poll(pfd, 5); err != nil && err != unix.EINTR {
				done <- err
				return
			}
			if _, err := d.HandleSocket(); err != nil {
				done <- err
				return
			}
		}
	}()
	err := fn()
	close(stop)
	derr := <-done
	if derr != nil {
		return fmt.Errorf("device: %w (front-end: %v)", derr, err)
	}
	return err
}

func sameFrames(t testing.TB, what string, want [][]byte, got [][]byte, sizes []int) {
	t.Helper()
	for i := range want {
		if sizes[i] != len(want[i]) || !bytes.Equal(got[i][:sizes[i]], want[i]) {
			t.Fatalf("%s: frame %d: got %d bytes, want %d (content equal: %v)", what, i, sizes[i], len(want[i]),
				bytes.Equal(got[i][:min(sizes[i], len(got[i]))], want[i]))
		}
	}
}

func isViolation(err error) bool { return errors.Is(err, ErrViolation) }
