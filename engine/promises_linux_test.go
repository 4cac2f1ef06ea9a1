package engine

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/hang"
	"github.com/vknetd/vknetd/internal/vhostguest"
	"github.com/vknetd/vknetd/ring"
)

// Promises of the offload paths that only show when something is short or
// someone lies: the pool's read reserve, the large buffers a guest that
// does not read may hold, and who may vouch for a checksum.

// A superframe is not cut when its segments would eat into the pool's
// read reserve (poolReserve reads): it is dropped as no-buffer, and the
// switch keeps the buffers it needs to go on reading. With exactly enough
// free it is cut; and once buffers are back, the next one is delivered.
func TestCutKeepsTheReadReserve(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	s, host, cl := newOffloadSwitch(t)
	hdr, f := tcpSuperframe(broadcast, mac(0xfe), 60000, 1448)
	msg := vnetMsg(hdr, f)
	segs, err := gso.Segments(f, hdr)
	if err != nil {
		t.Fatal(err)
	}
	reserve := poolReserve * s.e.readMax
	tap := s.e.ports.get(0)
	var held []ring.Ref
	hold := func(free int) {
		for s.e.pool.Free() > free {
			r, _ := s.e.pool.Get()
			held = append(held, r)
		}
	}
	release := func() {
		s.l.releaseBuffers(held)
		held = held[:0]
	}
	defer release()

	// One buffer short: the cut would leave less than the reserve.
	hold(segs + reserve - 1)
	if _, err := unix.Write(host, msg); err != nil {
		t.Fatal(err)
	}
	s.pump()
	if got := len(cl.recv(t)); got != 0 || tap.cnt.drops[DropNoBuffer] != 1 {
		t.Fatalf("with %d buffers free, %d segments and a reserve of %d: the client got %d segments, no-buffer drops %d; want the superframe dropped, not cut",
			segs+reserve-1, segs, reserve, got, tap.cnt.drops[DropNoBuffer])
	}
	if free := s.e.pool.Free(); free < reserve {
		t.Fatalf("%d buffers free after the refused cut, fewer than the reserve of %d", free, reserve)
	}

	// Exactly enough: cut, and the reserve is still there.
	release()
	hold(segs + reserve)
	if _, err := unix.Write(host, msg); err != nil {
		t.Fatal(err)
	}
	s.pump()
	checkSegments(t, cl.recv(t), 1448, f[54:])
	if tap.cnt.drops[DropNoBuffer] != 1 {
		t.Fatalf("no-buffer drops %d with exactly enough buffers for the cut and the reserve", tap.cnt.drops[DropNoBuffer])
	}

	// Buffers back: the switch reads and cuts as before.
	release()
	if _, err := unix.Write(host, msg); err != nil {
		t.Fatal(err)
	}
	s.pump()
	checkSegments(t, cl.recv(t), 1448, f[54:])
}

// A guest with GUEST_TSO that does not read (no RX buffers) is given at
// most largeBacklog superframes whole; the rest are cut for it into small
// buffers. The large buffers go on circulating: a guest that reads gets
// every superframe from the TAP whole, however many the other one is
// sent. Without the bound the idle guest's queue would hold them all, the
// TAP would cut as it reads, and superframes from guests would wait for
// ever.
func TestIdleGuestHoldsFewLargeBuffers(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	const large = 4
	e, path, host := offloadVhostSwitch(t, false, large)
	reader := startGuest(t, path, vhostguest.Options{Offloads: true})
	idle, err := vhostguest.New(vhostguest.Options{Offloads: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idle.Close)
	fd, err := vhostguest.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	idle.Attach(fd)
	if err := idle.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 2 })
	hdr, f := tcpSuperframe(broadcast, mac(0xfe), 60000, 1448)
	for i := 0; i < 4*large; i++ {
		f[60] = byte(i)
		if _, err := unix.Write(host, vnetMsg(hdr, f)); err != nil {
			t.Fatal(err)
		}
		frames, hdrs := receiveWithHdrs(t, reader, 1)
		reader.PostRX(1 << 16) // a superframe fills many buffers
		if len(frames[0]) != len(f) || frames[0][60] != byte(i) || hdrs[0].GSOType != gso.GSOTCPv4 {
			t.Fatalf("superframe %d reached the reading guest as a %d-byte frame (GSO type %d), not whole: the idle guest holds the large buffers",
				i, len(frames[0]), hdrs[0].GSOType)
		}
	}
}

// Only the host's kernel may vouch for a checksum (DATA_VALID, on a TAP
// read): the flag from a guest is cleared before its frame reaches the TAP
// or a guest with GUEST_CSUM, which would otherwise skip checking it. From
// the TAP it is passed on.
func TestDataValidFromAGuestIsCleared(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	e, path, host := offloadVhostSwitch(t, false, 0)
	from := startGuest(t, path, vhostguest.Options{Offloads: true})
	to := startGuest(t, path, vhostguest.Options{Offloads: true})
	if _, recv := to.Offloads(); recv&gso.OffloadCsum == 0 {
		t.Fatalf("the receiving guest did not get GUEST_CSUM (%#x)", recv)
	}
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 2 })
	vouched := gso.VirtioNetHdr{Flags: gso.FlagDataValid}
	f := ipv4UDP(broadcast, mac(7), [4]byte{198, 18, 1, 7}, [4]byte{198, 18, 255, 255})
	if from.Send([][]byte{f}, []gso.VirtioNetHdr{vouched}) != 1 {
		t.Fatal("the guest could not send")
	}
	_, tapHdrs := readTap(t, host, 1)
	if tapHdrs[0].Flags&gso.FlagDataValid != 0 {
		t.Errorf("the TAP got a guest's frame marked DATA_VALID (header %+v)", tapHdrs[0])
	}
	_, guestHdrs := receiveWithHdrs(t, to, 1)
	if guestHdrs[0].Flags&gso.FlagDataValid != 0 {
		t.Errorf("a guest with GUEST_CSUM got another guest's frame marked DATA_VALID (header %+v)", guestHdrs[0])
	}

	// The host's word stands: the same frame from the TAP keeps the flag.
	fromHost := ipv4UDP(broadcast, mac(0xfe), [4]byte{198, 18, 0, 1}, [4]byte{198, 18, 255, 255})
	if _, err := unix.Write(host, vnetMsg(vouched, fromHost)); err != nil {
		t.Fatal(err)
	}
	_, guestHdrs = receiveWithHdrs(t, to, 1)
	if guestHdrs[0].Flags&gso.FlagDataValid == 0 {
		t.Errorf("the host's DATA_VALID did not reach a guest with GUEST_CSUM (header %+v): this test could not see the flag cleared", guestHdrs[0])
	}
}
