package vhostuser

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/vhostguest"
)

// fdLedger is a Config.Fds that records what it is told and refuses
// more than most.
type fdLedger struct{ most, held, calls int }

func (l *fdLedger) set(n int) error {
	l.calls++
	l.held = n
	if n > l.most {
		return errors.New("over the test's budget: raise the limit")
	}
	return nil
}

// TestFdsCountsAGuestsMost: Config.Fds hears every fd a guest makes the
// device hold, up to MaxDeviceFds for a guest with every queue pair,
// every memory slot of its own file and a message's fds half sent; and 0
// once the device closes.
func TestFdsCountsAGuestsMost(t *testing.T) {
	l := &fdLedger{most: 1000}
	p := newPairConfig(t, vhostguest.Options{QueuePairs: MaxQueuePairs, MemoryFiles: maxRegions, QueueSize: 64}, Config{Fds: l.set})
	if want := 1 + 2*MaxQueues + maxRegions; l.held != want {
		t.Fatalf("set up with every queue pair and memory file: told %d fds, want %d", l.held, want)
	}
	// A SET_MEM_TABLE's header and 8 fds, its payload still to come.
	var fds []int
	for range maxMessageFDs {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
	}
	hdr := binary.LittleEndian.AppendUint32(nil, uint32(reqSetMemTable))
	hdr = binary.LittleEndian.AppendUint32(hdr, flagVersion1)
	hdr = binary.LittleEndian.AppendUint32(hdr, 8+32*maxRegions)
	if err := unix.Sendmsg(p.g.SocketFD(), hdr, unix.UnixRights(fds...), nil, 0); err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	if _, err := p.d.HandleSocket(); err != nil {
		t.Fatal(err)
	}
	if l.held != MaxDeviceFds || p.d.heldFds() != MaxDeviceFds {
		t.Fatalf("with a message's fds half sent: told %d fds (the device counts %d), want MaxDeviceFds %d", l.held, p.d.heldFds(), MaxDeviceFds)
	}
	p.d.Close()
	if l.held != 0 {
		t.Fatalf("closed: told %d fds, want 0", l.held)
	}
}

// TestFdsRefusalClosesTheGuest: a guest whose fds would go past what
// Config.Fds allows is refused with a violation carrying its reason.
func TestFdsRefusalClosesTheGuest(t *testing.T) {
	l := &fdLedger{most: 20}
	g, err := vhostguest.New(vhostguest.Options{QueuePairs: MaxQueuePairs, QueueSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	a, b := socketpair(t)
	d, err := NewDevice(a, Config{Fds: l.set})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	g.Attach(b)
	err = serve(d, g.Start)
	if !isViolation(err) || l.held <= l.most {
		t.Fatalf("a guest over the fd budget: %v (told %d fds), want a violation past %d", err, l.held, l.most)
	}
	d.Close()
	if l.held != 0 {
		t.Fatalf("closed: told %d fds, want 0", l.held)
	}
}
