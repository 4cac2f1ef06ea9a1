package engine

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/mactable"
)

// A transport's fd that is closed and replaced by a new one with the same
// number (the kernel hands out the lowest free number: a vhost-user guest
// that stops a ring and sets a new kick fd in one burst of messages gets
// it) is polled anew. Skipping a number already watched would leave the
// new fd unpolled, its kicks unheard.
func TestWatchedFDNumberReused(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, nil)
	p := s.connect().port
	kick := func() int {
		fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	heard := func() bool {
		t.Helper()
		events := make([]event, 8)
		n, err := s.l.poll.wait(events, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range events[:n] {
			if ev.token == subToken(p.id, 1) {
				return true
			}
		}
		return false
	}
	old := kick()
	if err := s.l.watch(p, watchOnly(old)); err != nil {
		t.Fatal(err)
	}
	unix.Close(old) // as the device does when the guest replaces it
	fd := kick()
	defer unix.Close(fd)
	if fd != old {
		t.Skipf("the new eventfd got number %d, not the closed one's (%d): nothing to test", fd, old)
	}
	if err := s.l.watch(p, watchOnly(fd)); err != nil {
		t.Fatal(err)
	}
	unix.Write(fd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	if !heard() {
		t.Fatal("the new fd with the old one's number is not polled")
	}
	// And an fd no longer wanted is no longer polled.
	if err := s.l.watch(p, watchOnly(-1)); err != nil {
		t.Fatal(err)
	}
	if heard() {
		t.Fatal("an fd the transport gave up is still polled")
	}
}

// watchOnly is a transport's watch list with fd as sub 1 and nothing else.
func watchOnly(fd int) *[maxSubFDs]int {
	var w [maxSubFDs]int
	for i := range w {
		w[i] = -1
	}
	w[0] = fd
	return &w
}
