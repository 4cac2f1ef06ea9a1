package main

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/hang"
	"github.com/vknetd/vknetd/vhostuser"
)

// The loop's tests stand a SEQPACKET socketpair in for the TAP: one frame
// per read and write, non-blocking, exactly what tap.ReadFrames and
// WriteFrames expect of a TAP fd. No root needed.

func seqpair(t testing.TB) (a, b int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	for _, fd := range fds {
		if err := unix.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
		// Room for a whole round of frames in flight each way.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	return fds[0], fds[1]
}

func testFrames(n, size int) [][]byte {
	fs := make([][]byte, n)
	for i := range fs {
		fs[i] = make([]byte, size-i%7)
		for j := range fs[i] {
			fs[i][j] = byte(i*31 + j)
		}
	}
	return fs
}

// shuttle writes frames into in, runs the loop until as many came out of
// out, and checks them; it allocates nothing itself.
type shuttle struct {
	t    testing.TB
	l    *loop
	buf  []byte
	seen int
}

func (s *shuttle) run(in, out int, frames [][]byte, check bool) {
	for _, f := range frames {
		if _, err := unix.Write(in, f); err != nil {
			s.t.Fatalf("writing a frame in: %v", err)
		}
	}
	got := 0
	for spins := 0; got < len(frames); spins++ {
		if spins > 100000 {
			s.t.Fatalf("%d of %d frames came through", got, len(frames))
		}
		if err := s.l.once(10); err != nil {
			s.t.Fatalf("loop: %v", err)
		}
		for got < len(frames) {
			n, err := unix.Read(out, s.buf)
			if err == unix.EAGAIN {
				break
			}
			if err != nil {
				s.t.Fatalf("reading a frame out: %v", err)
			}
			if check && !bytes.Equal(s.buf[:n], frames[got]) {
				s.t.Fatalf("frame %d came through as %d bytes, want %d", got, n, len(frames[got]))
			}
			got++
		}
	}
	s.seen += got
}

func seqLoop(t testing.TB) (l *loop, tapPeer, swPeer int) {
	tapA, tapB := seqpair(t)
	swA, swB := seqpair(t)
	sw := &seqLink{fd: swA, ep: -1, path: "test", rb: newMmsgBatch(), sb: newMmsgBatch()}
	l, err := newLoop(tapA, "test", sw, 1518, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.close)
	return l, tapB, swB
}

func TestLoopSeqpacketBothWays(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	l, tapPeer, swPeer := seqLoop(t)
	s := &shuttle{t: t, l: l, buf: make([]byte, 2048)}
	fs := testFrames(300, 1514)
	s.run(tapPeer, swPeer, fs, true)
	s.run(swPeer, tapPeer, fs, true)
	if l.st.upFrames != 300 || l.st.downFrames != 300 {
		t.Fatalf("counters up %d down %d, want 300 each", l.st.upFrames, l.st.downFrames)
	}
}

// TestLoopAllocs: the forwarding loop allocates nothing per frame, either
// way, over the SEQPACKET link.
func TestLoopAllocs(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	l, tapPeer, swPeer := seqLoop(t)
	s := &shuttle{t: t, l: l, buf: make([]byte, 2048)}
	fs := testFrames(256, 1514)
	s.run(tapPeer, swPeer, fs, false) // warm up
	allocs := testing.AllocsPerRun(20, func() {
		s.run(tapPeer, swPeer, fs, false)
		s.run(swPeer, tapPeer, fs, false)
	})
	t.Logf("%.2f allocations per round of %d frames each way", allocs, len(fs))
	if allocs != 0 && !raceEnabled {
		t.Fatalf("%.2f allocations per round of %d frames each way, want 0", allocs, len(fs))
	}
}

// vhostLoop runs the loop with a vhost-user link to a vhostuser.Device
// in this process, on a socketpair: the test plays the switch with the
// device's WriteRX and ReadTX. With offloads the device offers them, and
// the loop's fake TAP carries a virtio_net_hdr before every frame, as a
// TAP with IFF_VNET_HDR does.
func vhostLoop(t testing.TB, offloads bool) (l *loop, tapPeer int, d *vhostuser.Device, large *largeBuffers) {
	large = &largeBuffers{}
	d, v := vhostDevice(t, vhostuser.Config{Offloads: offloads, Large: large.get}, offloads)
	tapA, tapB := seqpair(t)
	var err error
	if l, err = newLoop(tapA, "test", v, 1518, offloads); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.close)
	return l, tapB, d, large
}

// vhostDevice connects a vhostLink (offloads: accepting them) to a new
// device in this process.
func vhostDevice(t testing.TB, cfg vhostuser.Config, offloads bool) (*vhostuser.Device, *vhostLink) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	d, err := vhostuser.NewDevice(fds[0], cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	done := make(chan struct{})
	go func() { // the device's side of the negotiation
		defer close(done)
		for {
			pfd := []unix.PollFd{{Fd: int32(d.SocketFD()), Events: unix.POLLIN}}
			if n, _ := unix.Poll(pfd, 2000); n <= 0 {
				return
			}
			if _, err := d.HandleSocket(); err != nil {
				return
			}
			if d.Ready() {
				return
			}
		}
	}()
	v, err := newVhostLink(fds[1], "test", offloads)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.close() })
	if !d.Ready() {
		t.Fatal("vhost-user device not ready after the guest's Start")
	}
	if v.offloads() != (offloads && cfg.Offloads) {
		t.Fatalf("link offloads %v, want %v", v.offloads(), offloads && cfg.Offloads)
	}
	return d, v
}

// largeBuffers is a vhostuser.Config.Large handing out preallocated
// superframe buffers; reset makes them all available again.
type largeBuffers struct {
	bufs [][]byte
	next int
}

func (l *largeBuffers) get(int) []byte {
	if l.next == len(l.bufs) {
		return nil
	}
	l.next++
	return l.bufs[l.next-1]
}

// vhostShuttle moves plain frames TAP -> TX ring (read by the device) and
// device -> RX ring -> TAP, allocating nothing itself: vnetShuttle over a
// link without offloads, each frame its own message and no header.
type vhostShuttle struct{ *vnetShuttle }

func (s vhostShuttle) up(tapPeer int, frames [][]byte, check bool) {
	s.vnetShuttle.up(tapPeer, frames, frames, nil, check)
}

func (s vhostShuttle) down(tapPeer int, frames [][]byte, check bool) {
	s.vnetShuttle.down(tapPeer, frames, nil, check)
}

func newVhostShuttle(t testing.TB) (vhostShuttle, int) {
	s, tapPeer := newShuttleOver(t, false)
	return vhostShuttle{s}, tapPeer
}

func TestLoopVhostBothWays(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	s, tapPeer := newVhostShuttle(t)
	fs := testFrames(1000, 1514) // more than a ring holds: reclaim and re-post
	s.up(tapPeer, fs[:200], true)
	s.up(tapPeer, fs, true)
	s.down(tapPeer, fs, true)
	if st := s.l.st; st.upFrames != 1200 || st.downFrames != 1000 {
		t.Fatalf("counters up %d down %d, want 1200 and 1000", st.upFrames, st.downFrames)
	}
}

// TestLoopVhostAllocs: no allocation per frame over vhost-user either
// (the device's side, in this process, counts too: it allocates nothing
// per frame in the engine's loop already).
func TestLoopVhostAllocs(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	s, tapPeer := newVhostShuttle(t)
	fs := testFrames(200, 1514)
	s.up(tapPeer, fs, false)
	s.down(tapPeer, fs, false)
	allocs := testing.AllocsPerRun(20, func() {
		s.up(tapPeer, fs, false)
		s.down(tapPeer, fs, false)
	})
	t.Logf("%.2f allocations per round of %d frames each way", allocs, len(fs))
	if allocs != 0 && !raceEnabled {
		t.Fatalf("%.2f allocations per round of %d frames each way, want 0", allocs, len(fs))
	}
}
