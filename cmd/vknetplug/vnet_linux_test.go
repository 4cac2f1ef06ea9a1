package main

import (
	"bytes"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/hang"
	"github.com/vknetd/vknetd/internal/superframe"
	"github.com/vknetd/vknetd/tap"
	"github.com/vknetd/vknetd/vhostuser"
)

// The header path's tests: a SEQPACKET socketpair stands in for a TAP
// with IFF_VNET_HDR (one message is a header and its frame, which is all
// readv and writev on a TAP see), and a real TAP in a namespace of its
// own checks the kernel's side.

// tcpSuperframe builds an Ethernet/IPv4/TCP frame with payload bytes of
// TCP payload and the header the kernel's TSO gives it: a partial
// checksum and segments of mss bytes.
func tcpSuperframe(payload, mss int, seq byte) ([]byte, gso.VirtioNetHdr) {
	return superframe.Flow{DstMAC: [6]byte{2, 0, 0, 0, 0, 2}, SrcMAC: [6]byte{2, 0, 0, 0, 0, 1},
		SrcIP: [4]byte{198, 18, 0, 1}, DstIP: [4]byte{198, 18, 0, 2}, SrcPort: 40000, DstPort: 5001,
		MSS: mss, Fill: seq}.TCP(payload, uint32(seq))
}

// offloadFrames is n frames cycling through a 64 KiB superframe, a
// partial-checksum frame and a plain one, with their headers.
func offloadFrames(n int) ([][]byte, []gso.VirtioNetHdr) {
	fs, hs := make([][]byte, n), make([]gso.VirtioNetHdr, n)
	for i := range fs {
		switch i % 3 {
		case 0:
			fs[i], hs[i] = tcpSuperframe(65535-40, 1448, byte(i))
		case 1:
			fs[i], hs[i] = tcpSuperframe(1000, 1448, byte(i))
			hs[i].GSOType, hs[i].GSOSize = gso.GSONone, 0
		default:
			fs[i] = testFrames(1, 1514)[0]
		}
	}
	return fs, hs
}

// withHdrs is each frame behind its 10-byte header: what the TAP reads.
func withHdrs(fs [][]byte, hs []gso.VirtioNetHdr) [][]byte {
	ms := make([][]byte, len(fs))
	for i := range fs {
		ms[i] = make([]byte, tap.VnetHdrSize+len(fs[i]))
		hs[i].Encode(ms[i], tap.VnetHdrSize)
		copy(ms[i][tap.VnetHdrSize:], fs[i])
	}
	return ms
}

// vnetShuttle moves frames with headers fake TAP -> device and device ->
// fake TAP, allocating nothing itself. Over a link without offloads
// (newShuttleOver) the frames carry no header: hdrs are nil.
type vnetShuttle struct {
	t     testing.TB
	l     *loop
	d     *vhostuser.Device
	large *largeBuffers
	small [][]byte // bufs as given, before Large replaced some
	bufs  [][]byte
	sizes []int
	hdrs  []gso.VirtioNetHdr
	msg   []byte
	hdrAt int // the header's length on the TAP: 0 without offloads
}

func newVnetShuttle(t testing.TB) (*vnetShuttle, int) { return newShuttleOver(t, true) }

func newShuttleOver(t testing.TB, offloads bool) (*vnetShuttle, int) {
	l, tapPeer, d, large := vhostLoop(t, offloads)
	if offloads {
		for range superBatchSize {
			large.bufs = append(large.bufs, make([]byte, gso.MaxFrameLen))
		}
	}
	s := &vnetShuttle{t: t, l: l, d: d, large: large, small: make([][]byte, 64), bufs: make([][]byte, 64),
		sizes: make([]int, 64), hdrs: make([]gso.VirtioNetHdr, 64), msg: make([]byte, tap.VnetHdrSize+gso.MaxFrameLen+1)}
	if offloads {
		s.hdrAt = tap.VnetHdrSize
	}
	for i := range s.small {
		s.small[i] = make([]byte, 2048)
	}
	return s, tapPeer
}

func (s *vnetShuttle) up(tapPeer int, msgs, frames [][]byte, hdrs []gso.VirtioNetHdr, check bool) {
	for _, m := range msgs {
		if _, err := unix.Write(tapPeer, m); err != nil {
			s.t.Fatalf("writing a frame in: %v", err)
		}
	}
	got := 0
	deadline := time.Now().Add(10 * time.Second)
	for got < len(frames) {
		if time.Now().After(deadline) {
			s.t.Fatalf("%d of %d frames reached the device", got, len(frames))
		}
		if err := s.l.once(1); err != nil {
			s.t.Fatalf("loop: %v", err)
		}
		s.d.DrainKick(vhostuser.TXQ)
		for {
			s.large.next = 0
			copy(s.bufs, s.small)
			n, _, err := s.d.ReadTX(s.bufs, s.sizes, s.hdrs)
			if err != nil {
				s.t.Fatal(err)
			}
			for i := 0; i < n && check; i++ {
				if !bytes.Equal(s.bufs[i][:s.sizes[i]], frames[got+i]) || hdrs != nil && s.hdrs[i] != hdrs[got+i] {
					s.t.Fatalf("frame %d reached the device as %d bytes, header %+v; want %d, %+v",
						got+i, s.sizes[i], s.hdrs[i], len(frames[got+i]), hdrs[got+i])
				}
			}
			got += n
			if n == 0 {
				break
			}
		}
	}
}

func (s *vnetShuttle) down(tapPeer int, frames [][]byte, hdrs []gso.VirtioNetHdr, check bool) {
	got, put := 0, 0
	deadline := time.Now().Add(10 * time.Second)
	for got < len(frames) {
		if time.Now().After(deadline) {
			s.t.Fatalf("%d of %d frames reached the TAP (%d put)", got, len(frames), put)
		}
		if put < len(frames) {
			s.d.DrainKick(vhostuser.RXQ)
			var h []gso.VirtioNetHdr
			if hdrs != nil {
				h = hdrs[put:]
			}
			n, err := s.d.WriteRX(frames[put:], h)
			if err != nil {
				s.t.Fatal(err)
			}
			put += n
		}
		if err := s.l.once(1); err != nil {
			s.t.Fatalf("loop: %v", err)
		}
		for got < len(frames) {
			n, err := unix.Read(tapPeer, s.msg)
			if err == unix.EAGAIN {
				break
			}
			if err != nil {
				s.t.Fatal(err)
			}
			if check {
				var h, want gso.VirtioNetHdr
				if hdrs != nil {
					h.Decode(s.msg, tap.VnetHdrSize)
					want = hdrs[got]
				}
				if !bytes.Equal(s.msg[s.hdrAt:n], frames[got]) || h != want {
					s.t.Fatalf("frame %d reached the TAP as %d bytes, header %+v; want %d, %+v",
						got, n-s.hdrAt, h, len(frames[got]), want)
				}
			}
			got++
		}
	}
}

// TestLoopVnetBothWays: superframes, partial checksums and plain frames
// cross the plug both ways with their headers, more of them than a batch
// or a ring holds.
func TestLoopVnetBothWays(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	s, tapPeer := newVnetShuttle(t)
	fs, hs := offloadFrames(100)
	ms := withHdrs(fs, hs)
	for i := 0; i < len(fs); i += 10 { // the fake TAP's queue holds 4 MiB
		s.up(tapPeer, ms[i:i+10], fs[i:i+10], hs[i:i+10], true)
	}
	s.down(tapPeer, fs, hs, true)
	if st := s.l.st; st.upFrames != 100 || st.downFrames != 100 || st.tapRefused != 0 || st.tapTooLong != 0 {
		t.Fatalf("counters %+v", st)
	}
}

// TestLoopVnetAllocs: headers and superframes cost the loop no
// allocation per frame either.
func TestLoopVnetAllocs(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	s, tapPeer := newVnetShuttle(t)
	fs, hs := offloadFrames(30)
	ms := withHdrs(fs, hs)
	s.up(tapPeer, ms, fs, hs, false)
	s.down(tapPeer, fs, hs, false)
	allocs := testing.AllocsPerRun(10, func() {
		s.up(tapPeer, ms, fs, hs, false)
		s.down(tapPeer, fs, hs, false)
	})
	t.Logf("%.2f allocations per round of %d frames each way", allocs, len(fs))
	if allocs != 0 && !raceEnabled {
		t.Fatalf("%.2f allocations per round of %d frames each way, want 0", allocs, len(fs))
	}
}

// TestLoopVnetSwitchWithoutOffloads: a switch that offers none leaves the
// link without headers, so the plug opens its TAP as before.
func TestLoopVnetSwitchWithoutOffloads(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	_, v := vhostDevice(t, vhostuser.Config{}, true)
	if v.offloads() || v.offloadsAny() {
		t.Fatal("offloads negotiated with a switch that offers none")
	}
}

// TestLoopVnetDirect: with headers over vhost-user the loop has no
// buffers of its own: the link moves the frames.
func TestLoopVnetDirect(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	l, _, _, _ := vhostLoop(t, true)
	if l.direct == nil || len(l.up.bufs) != 0 || len(l.dn.bufs) != 0 {
		t.Fatalf("direct %v, %d and %d loop buffers", l.direct != nil, len(l.up.bufs), len(l.dn.bufs))
	}
}

// vnetSizes is frames of sizes around each 16 KiB buffer boundary (with
// the guest's 12-byte header in front), the smallest and the largest,
// every other one a partial-checksum TCP frame or superframe.
func vnetSizes() ([][]byte, []gso.VirtioNetHdr) {
	var fs [][]byte
	var hs []gso.VirtioNetHdr
	add := func(n int) {
		f := make([]byte, n)
		for i := range f {
			f[i] = byte(i*5 + len(fs))
		}
		fs, hs = append(fs, f), append(hs, gso.VirtioNetHdr{})
	}
	for _, n := range []int{1, 14, 60, 1514, 9018} {
		add(n)
	}
	for b := 16 << 10; b <= 5*16<<10; b += 16 << 10 {
		for d := -13; d <= -11; d++ {
			if n := b + d; n <= gso.MaxFrameLen {
				add(n)
			}
		}
	}
	add(gso.MaxFrameLen - 1)
	add(gso.MaxFrameLen)
	for _, p := range []int{100, 16000, 40000, 65535 - 40} {
		f, h := tcpSuperframe(p, 1448, byte(p))
		fs, hs = append(fs, f), append(hs, h)
	}
	return fs, hs
}

// TestLoopVnetSizes: frames of every length class up to gso.MaxFrameLen
// cross the plug intact both ways, superframes still pass gso.Check.
func TestLoopVnetSizes(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	s, tapPeer := newVnetShuttle(t)
	fs, hs := vnetSizes()
	ms := withHdrs(fs, hs)
	for i := 0; i < len(fs); i += 8 {
		end := min(i+8, len(fs))
		s.up(tapPeer, ms[i:end], fs[i:end], hs[i:end], true)
	}
	s.down(tapPeer, fs, hs, true)
	for i := range fs {
		if hs[i].GSOType != gso.GSONone {
			if r := gso.Check(fs[i], hs[i], 1500); r != gso.OK {
				t.Fatalf("frame %d: gso.Check: %v", i, r)
			}
		}
	}
	if st := s.l.st; st.upFrames != uint64(len(fs)) || st.downFrames != uint64(len(fs)) || st.tapRefused+st.tapTooLong != 0 {
		t.Fatalf("counters %+v, want %d frames each way", st, len(fs))
	}
}

// TestLoopVnetTAPFull: a TAP that pushes back leaves the switch's frames
// in the RX ring; the loop then sleeps (no work until the TAP is
// writable, nothing read from the ring) and delivers them, in order,
// when the TAP takes them again.
func TestLoopVnetTAPFull(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	l, tapPeer, d, _ := vhostLoop(t, true)
	unix.SetsockoptInt(l.tapfd, unix.SOL_SOCKET, unix.SO_SNDBUF, 256<<10)
	fs, hs := make([][]byte, 40), make([]gso.VirtioNetHdr, 40)
	for i := range fs {
		fs[i], hs[i] = tcpSuperframe(65535-40, 1448, byte(i))
	}
	n, err := d.WriteRX(fs, hs)
	if err != nil || n < 20 {
		t.Fatalf("WriteRX = %d, %v", n, err)
	}
	for range 5 {
		if err := l.once(1); err != nil {
			t.Fatal(err)
		}
	}
	if !l.dnBlocked || l.dnWork() || l.upWork() || l.tapEvents&unix.EPOLLOUT == 0 {
		t.Fatalf("TAP full: blocked %v, work %v %v, TAP events %#x", l.dnBlocked, l.dnWork(), l.upWork(), l.tapEvents)
	}
	early := l.st.downFrames
	if early == 0 || early >= uint64(n) {
		t.Fatalf("%d of %d frames went before the TAP was full", early, n)
	}
	msg := make([]byte, tap.VnetHdrSize+gso.MaxFrameLen+1)
	got, put := 0, n
	deadline := time.Now().Add(10 * time.Second)
	for got < len(fs) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d frames reached the TAP", got, len(fs))
		}
		if put < len(fs) {
			k, err := d.WriteRX(fs[put:], hs[put:])
			if err != nil {
				t.Fatal(err)
			}
			put += k
		}
		// One frame out per round: the TAP stays nearly full.
		if k, err := unix.Read(tapPeer, msg); err == nil {
			var h gso.VirtioNetHdr
			h.Decode(msg, tap.VnetHdrSize)
			if !bytes.Equal(msg[tap.VnetHdrSize:k], fs[got]) || h != hs[got] {
				t.Fatalf("frame %d reached the TAP as %d bytes, header %+v", got, k-tap.VnetHdrSize, h)
			}
			got++
		}
		if err := l.once(1); err != nil {
			t.Fatal(err)
		}
	}
	if st := l.st; st.downFrames != uint64(len(fs)) || st.tapRefused != 0 {
		t.Fatalf("counters %+v", st)
	}
}

// TestLoopVnetSwitchFull: a switch whose TX ring has no room leaves the
// frames in the TAP, which is not read until the switch takes frames
// again; then they all go, in order.
func TestLoopVnetSwitchFull(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	s, tapPeer := newVnetShuttle(t)
	fs, hs := make([][]byte, 60), make([]gso.VirtioNetHdr, 60)
	for i := range fs {
		fs[i], hs[i] = tcpSuperframe(65535-40, 1448, byte(i))
	}
	ms := withHdrs(fs, hs)
	for _, m := range ms {
		if _, err := unix.Write(tapPeer, m); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		if err := s.l.once(1); err != nil {
			t.Fatal(err)
		}
	}
	// 256 descriptors, five per superframe: 51 in the ring.
	if !s.l.upBlocked || s.l.upWork() || s.l.tapEvents&unix.EPOLLIN != 0 || s.l.st.upFrames != 51 {
		t.Fatalf("switch full: blocked %v, work %v, TAP events %#x, %d frames up", s.l.upBlocked, s.l.upWork(), s.l.tapEvents, s.l.st.upFrames)
	}
	s.up(tapPeer, nil, fs, hs, true)
}
