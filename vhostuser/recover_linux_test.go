package vhostuser

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/vhostguest"
)

// crashCopy is what a supervisor holds of p's device: its state as
// Export wrote it now (the indices of this moment, stale later) and
// copies of its fds, as SCM_RIGHTS gives them.
func crashCopy(t *testing.T, p *pair) (State, FDs) {
	t.Helper()
	st, fds, err := p.d.Export()
	if err != nil {
		t.Fatal(err)
	}
	return st, dupFDs(t, fds)
}

func dupFDs(t *testing.T, fds FDs) FDs {
	t.Helper()
	dup := func(fd int) int {
		if fd < 0 {
			return -1
		}
		n, err := unix.Dup(fd)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	c := FDs{Socket: dup(fds.Socket)}
	for _, fd := range fds.Regions {
		c.Regions = append(c.Regions, dup(fd))
	}
	for i := range fds.Kick {
		c.Kick[i], c.Call[i] = dup(fds.Kick[i]), dup(fds.Call[i])
	}
	return c
}

// The device dies (its process, kill -9) after it moved on from the
// state a supervisor kept: Recover resumes both rings at the used idx in
// guest memory. On TX it takes exactly the frames it had not used, in
// order; on RX it fills the buffers after those it filled, so the guest
// gets every frame once; each ring's guest is called. Adopt, which trusts
// the stale indices, takes the 4 used frames again and overwrites the
// filled RX buffers.
func TestRecoverResumesRingsFromUsedIdx(t *testing.T) {
	p := newPair(t, vhostguest.Options{})
	st, fds := crashCopy(t, p) // kept right after negotiation: indices 0
	p.g.PostRX(64)
	sent := frames(10, 100)
	if n := p.g.Send(sent, nil); n != len(sent) {
		t.Fatalf("guest sent %d of %d", n, len(sent))
	}
	b, sizes := bufs(4, 2048)
	if n, _, err := p.d.ReadTX(b, sizes, nil); err != nil || n != 4 {
		t.Fatalf("old device read %d (%v), want 4", n, err)
	}
	rx := frames(5, 200)
	if n, err := p.d.WriteRX(rx[:3], nil); err != nil || n != 3 {
		t.Fatalf("old device wrote %d (%v), want 3", n, err)
	}
	p.d.Close() // it died; the guest's socket lives on in the supervisor's copy

	d, err := Recover(Config{}, st, fds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if d.stats.Calls < 2 {
		t.Errorf("the recovered device called the guest %d times, want once per ring", d.stats.Calls)
	}
	b, sizes = bufs(16, 2048)
	n, _, err := d.ReadTX(b, sizes, nil)
	if err != nil || n != 6 {
		t.Fatalf("recovered device read %d frames (%v), want the 6 not used", n, err)
	}
	sameFrames(t, "TX after recovery", sent[4:], b[:n], sizes)
	if n, err := d.WriteRX(rx[3:], nil); err != nil || n != 2 {
		t.Fatalf("recovered device wrote %d (%v), want 2", n, err)
	}
	b, sizes = bufs(16, 2048)
	if n := p.g.Receive(b, sizes, nil); n != len(rx) {
		t.Fatalf("guest received %d frames, want %d", n, len(rx))
	}
	sameFrames(t, "RX across the crash", rx, b[:len(rx)], sizes)
}

// A used idx the guest rewrote to where no ring could be refuses the
// device: Recover returns a violation within the call, having closed
// every fd (the guest sees its socket hang up and may reconnect), and
// nothing is read from the ring.
func TestRecoverRefusesHostileUsedIdx(t *testing.T) {
	for _, c := range []struct {
		name  string
		queue int
		used  func(avail uint16) uint16
	}{
		{"TX used ahead of avail", TXQ, func(a uint16) uint16 { return a + 1 }},
		{"TX used a ring and one behind", TXQ, func(a uint16) uint16 { return a - 257 }},
		{"RX used half the index space away", RXQ, func(a uint16) uint16 { return a + 0x8000 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newPair(t, vhostguest.Options{QueueSize: 256})
			p.g.PostRX(16)
			if p.g.Send(frames(3, 64), nil) != 3 {
				t.Fatal("guest could not send")
			}
			st, fds := crashCopy(t, p)
			_, availOff, usedOff := p.g.RingOffsets(c.queue)
			mem := p.g.Mem()
			avail := binary.LittleEndian.Uint16(mem[availOff+2:])
			binary.LittleEndian.PutUint16(mem[usedOff+2:], c.used(avail))
			p.d.Close()
			d, err := Recover(Config{}, st, fds)
			if err == nil {
				d.Close()
				t.Fatalf("avail idx %d, used idx %d: recovered", avail, c.used(avail))
			}
			if !isViolation(err) {
				t.Fatalf("refused with %v, want a violation", err)
			}
			// Every copy of the device's side is closed: the guest reads
			// end of file.
			unix.SetNonblock(p.g.SocketFD(), false)
			var one [1]byte
			unix.SetsockoptTimeval(p.g.SocketFD(), unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
			if n, err := unix.Read(p.g.SocketFD(), one[:]); n != 0 || err != nil {
				t.Fatalf("the guest's socket after a refused recovery: read %d, %v; want end of file", n, err)
			}
			for _, fd := range append([]int{fds.Socket, fds.Kick[TXQ], fds.Call[RXQ]}, fds.Regions...) {
				if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
					t.Errorf("fd %d still open after a refused recovery", fd)
				}
			}
		})
	}
}

// A front-end that shrank its memory file after the new process mapped it
// makes Recover's first look at the rings fault: the device is refused
// with a violation, on whatever goroutine Recover runs, and the process
// lives (before, the fault killed it, and the supervisor's next daemon
// would have met the same file).
func TestRecoverSurvivesShrunkMemory(t *testing.T) {
	p := newPair(t, vhostguest.Options{})
	st, fds := crashCopy(t, p)
	p.d.Close()
	memfd := fds.Regions[0]
	cfg := Config{Memory: func(n uint64) error {
		if n > 0 {
			unix.Ftruncate(memfd, 0) // after the sizes were checked, before the rings are read
		}
		return nil
	}}
	d, err := Recover(cfg, st, fds)
	if err == nil {
		d.Close()
		t.Fatal("recovered a device whose memory is gone")
	}
	if !isViolation(err) {
		t.Fatalf("refused with %v, want a violation", err)
	}
}

// A multi-queue guest is recovered with every pair: each TX ring resumes
// at its own used idx, so frames sent on any pair after the crash are
// read once, and none read before is read again.
func TestRecoverResumesEveryQueuePair(t *testing.T) {
	const pairs = 4
	p := newPair(t, vhostguest.Options{QueuePairs: pairs})
	st, fds := crashCopy(t, p)
	b, sizes := bufs(64, 2048)
	for round := range 2 {
		for k := range pairs {
			p.g.Use(k)
			if p.g.Send([][]byte{udpFlowFrame(1000+k, round)}, nil) != 1 {
				t.Fatalf("pair %d: could not send", k)
			}
		}
		if round == 1 {
			break
		}
		if n, _, err := p.d.ReadTX(b, sizes, nil); err != nil || n != pairs {
			t.Fatalf("old device read %d frames (%v), want %d", n, err, pairs)
		}
	}
	p.d.Close()
	d, err := Recover(Config{}, st, fds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	n, _, err := d.ReadTX(b, sizes, nil)
	if err != nil || n != pairs {
		t.Fatalf("recovered device read %d frames (%v), want the %d sent after the last read, one per pair", n, err, pairs)
	}
	want := map[string]bool{}
	for k := range pairs {
		want[string(udpFlowFrame(1000+k, 1))] = true
	}
	for i := range n {
		if !want[string(b[i][:sizes[i]])] {
			t.Fatalf("frame %d read after recovery was not one sent after the last read", i)
		}
	}
}
