package engine

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/testbed"
	"github.com/vknetd/vknetd/internal/vhostguest"
)

// The one copy from guest to guest (direct.go): when it is taken, and
// every way a frame goes through its pool buffer instead.

var (
	directIPA = [4]byte{198, 18, 0, 11}
	directIPB = [4]byte{198, 18, 0, 12}
)

// directCounts reads the first loop's counters of frames written guest to
// guest and of split frames whose rest went through a pool buffer.
func directCounts(t *testing.T, e *Engine) (guestToGuest, restsCopied uint64) {
	t.Helper()
	l := e.loops[0]
	if err := l.do(func() { guestToGuest, restsCopied = l.io.guestToGuest, l.io.restsCopied }); err != nil {
		t.Fatal(err)
	}
	return guestToGuest, restsCopied
}

// udpOf is a valid IPv4/UDP frame of size bytes, its payload numbered
// seq and filled after the number with fill.
func udpOf(dst, src [6]byte, sip, dip [4]byte, size, seq int, fill byte) []byte {
	payload := bytes.Repeat([]byte{fill}, size-14-20-8)
	binary.BigEndian.PutUint32(payload, uint32(seq))
	return testbed.IPv4UDP(src, dst, netip.AddrFrom4(sip), netip.AddrFrom4(dip), 4000, 5000, payload)
}

// startGuestNoRX is startGuest without RX buffers posted.
func startGuestNoRX(t *testing.T, path string, o vhostguest.Options) *vhostguest.Guest {
	t.Helper()
	g, err := vhostguest.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	fd, err := vhostguest.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	g.Attach(fd)
	if err := g.Start(); err != nil {
		t.Fatalf("starting the guest's device: %v", err)
	}
	return g
}

// directPair starts a switch and guest a (mac 1, directIPA); b (mac 2,
// directIPB), started by startB, says hello so the switch knows where it
// is, and a receives the hello. The switch splits every frame longer
// than splitHead, at any size, so that the one copy is what is tested.
func directPair(t *testing.T, secureMode bool, startB func(*testing.T, string, vhostguest.Options) *vhostguest.Guest, bOpts vhostguest.Options) (e *Engine, a, b *vhostguest.Guest, path string) {
	t.Helper()
	return directPairOver(t, 0, secureMode, startB, bOpts)
}

// directPairOver is directPair with oneCopyOver set to over while the
// guests connect (a port takes it then).
func directPairOver(t *testing.T, over int, secureMode bool, startB func(*testing.T, string, vhostguest.Options) *vhostguest.Guest, bOpts vhostguest.Options) (e *Engine, a, b *vhostguest.Guest, path string) {
	t.Helper()
	old := oneCopyOver
	oneCopyOver = over
	t.Cleanup(func() { oneCopyOver = old })
	e, path = vhostSwitch(t, secureMode, nil)
	a = startGuest(t, path, vhostguest.Options{})
	b = startB(t, path, bOpts)
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 2 })
	hello := ipv4UDP(broadcast, mac(2), directIPB, [4]byte{198, 18, 255, 255})
	sendAll(t, b, [][]byte{hello})
	if got := receiveFrames(t, a, 1); len(got) != 1 || !bytes.Equal(got[0], hello) {
		t.Fatalf("a received %d frames, want b's hello", len(got))
	}
	return e, a, b, path
}

// sendAll sends frames from g, as its ring takes them.
func sendAll(t *testing.T, g *vhostguest.Guest, frames [][]byte) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for sent := 0; sent < len(frames); {
		if time.Now().After(deadline) {
			t.Fatalf("the guest sent %d of %d frames: its TX ring stays full", sent, len(frames))
		}
		k := g.Send(frames[sent:], nil)
		if sent += k; k == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

// portsByID is a snapshot of the client ports, the first connected first.
func portsByID(t *testing.T, e *Engine) []PortStats {
	t.Helper()
	st, err := e.Stats()
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(st.Ports, func(x, y PortStats) int { return int(x.ID) - int(y.ID) })
	return st.Ports
}

// A long unicast frame from one guest to another with room goes with one
// copy, in secure mode too, and arrives whole, in order, counted.
func TestVhostGuestToGuestOneCopy(t *testing.T) {
	for _, secureMode := range []bool{false, true} {
		e, a, b, _ := directPair(t, secureMode, startGuest, vhostguest.Options{})
		var want [][]byte
		for i := 0; i < 100; i++ {
			want = append(want, udpOf(mac(2), mac(1), directIPA, directIPB, []int{129, 200, 1514, 9014}[i%4], i, 0x5a))
		}
		sendAll(t, a, want)
		expectFrames(t, "b", receiveFrames(t, b, len(want)), want...)
		g2g, rests := directCounts(t, e)
		if g2g != uint64(len(want)) || rests != 0 {
			t.Fatalf("secure=%v: %d frames guest to guest and %d rests copied to the pool, want %d and 0", secureMode, g2g, rests, len(want))
		}
		var bytesSent uint64
		for _, f := range want {
			bytesSent += uint64(len(f))
		}
		ports := portsByID(t, e)
		if pa, pb := ports[0], ports[1]; pa.RxFrames != 100 || pb.TxFrames != 100 || pb.TxBytes != bytesSent || len(pa.Drops)+len(pb.Drops) != 0 {
			t.Fatalf("secure=%v: a received %d frames, b was sent %d (%d bytes, want %d), drops %v %v",
				secureMode, pa.RxFrames, pb.TxFrames, pb.TxBytes, bytesSent, pa.Drops, pb.Drops)
		}
	}
}

// With the switch's own threshold, frames of a standard MTU in one
// descriptor go through a pool buffer, copied twice (faster with DPDK
// guests, see oneCopyOver), and only longer ones guest to guest; both
// arrive whole and in order. (A long frame behind short ones queued in
// the same batch waits behind them, through the pool: the long ones go
// alone here.)
func TestVhostGuestToGuestOneCopyOnlyPastTheThreshold(t *testing.T) {
	e, a, b, _ := directPairOver(t, oneCopyOver, false, startGuest, vhostguest.Options{})
	for i, c := range []struct {
		sizes []int
		g2g   uint64 // frames guest to guest so far
	}{
		{[]int{129, 1514, oneCopyOver, 1514}, 0},
		{[]int{oneCopyOver + 1, 9014}, 2},
	} {
		var want [][]byte
		for k, size := range c.sizes {
			want = append(want, udpOf(mac(2), mac(1), directIPA, directIPB, size, 10*i+k, 0x5a))
		}
		sendAll(t, a, want)
		expectFrames(t, "b", receiveFrames(t, b, len(want)), want...)
		if g2g, rests := directCounts(t, e); g2g != c.g2g || rests != 0 {
			t.Fatalf("after frames of %v bytes: %d guest to guest and %d rests copied to the pool, want %d and 0 (one copy past %d bytes)",
				c.sizes, g2g, rests, c.g2g, oneCopyOver)
		}
	}
}

// A guest without RX buffers makes the frames wait in its queue, and
// the frames after them queue behind them though it has room by then:
// each arrives once, in the order sent.
func TestVhostGuestToGuestWaitsInOrder(t *testing.T) {
	e, a, b, _ := directPair(t, false, startGuestNoRX, vhostguest.Options{})
	frame := func(seq int) []byte { return udpOf(mac(2), mac(1), directIPA, directIPB, 1514, seq, 0x33) }
	var want [][]byte
	send := func(from, to int) {
		var fs [][]byte
		for i := from; i < to; i++ {
			fs = append(fs, frame(i))
		}
		sendAll(t, a, fs)
		want = append(want, fs...)
		waitFor(t, func() bool { return portsByID(t, e)[0].RxFrames == uint64(to) })
	}
	// None of b's buffers: all 40 wait.
	send(0, 40)
	if g2g, rests := directCounts(t, e); g2g != 0 || rests != 40 {
		t.Fatalf("b without buffers: %d frames guest to guest, %d through the pool; want 0 and 40", g2g, rests)
	}
	var got [][]byte
	bufs, sizes := make([][]byte, 64), make([]int, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	take := func(n int) {
		deadline := time.Now().Add(5 * time.Second)
		for len(got) < n && time.Now().Before(deadline) {
			k := b.Receive(bufs, sizes, nil)
			for i := 0; i < k; i++ {
				got = append(got, append([]byte(nil), bufs[i][:sizes[i]]...))
			}
			if k == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		if len(got) != n {
			t.Fatalf("b received %d frames, want %d", len(got), n)
		}
	}
	b.PostRX(1 << 16)
	take(40)
	// Room for 10 of the next 30: 10 go straight, 20 wait; 5 more
	// buffers take 5 of them, and the next 10 frames wait behind the 15.
	// Every buffer of b's ring is posted again, and all but 10 filled
	// (Receive does not post them again).
	b.PostRX(1 << 16)
	fillers := 256 - 10
	send(40, 40+fillers)
	take(40 + fillers)
	// b now has 10 buffers posted (Receive does not repost them).
	send(40+fillers, 70+fillers) // b has 10 buffers left
	if g2g, _ := directCounts(t, e); g2g != uint64(fillers+10) {
		t.Fatalf("%d frames went guest to guest, want the %d fillers and the 10 that had room", g2g, fillers)
	}
	b.PostRX(5)
	waitFor(t, func() bool { return portsByID(t, e)[1].Queued == 15 })
	send(70+fillers, 80+fillers)
	b.PostRX(1 << 16)
	take(80 + fillers)
	expectFrames(t, "b", got, want...)
	g2g, rests := directCounts(t, e)
	if g2g != uint64(fillers+10) || rests != 40+30 {
		t.Fatalf("%d frames guest to guest, %d through the pool; want %d and %d", g2g, rests, fillers+10, 70)
	}
}

// Floods and mirrored frames go through the pool buffer, whole.
func TestVhostGuestToGuestFloodAndMirror(t *testing.T) {
	e, a, b, path := directPair(t, false, startGuest, vhostguest.Options{})
	c := startGuest(t, path, vhostguest.Options{})
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 3 })
	flood := udpOf(broadcast, mac(1), directIPA, [4]byte{198, 18, 255, 255}, 1514, 1, 0x11)
	sendAll(t, a, [][]byte{flood})
	expectFrames(t, "b", receiveFrames(t, b, 1), flood)
	expectFrames(t, "c", receiveFrames(t, c, 1), flood)
	if g2g, rests := directCounts(t, e); g2g != 0 || rests != 1 {
		t.Fatalf("flood: %d frames guest to guest, %d through the pool; want 0 and 1", g2g, rests)
	}

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	unix.SetNonblock(fds[1], true)
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	unix.SetsockoptTimeval(fds[0], unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if _, err := e.AttachMonitor(fds[1], true, "all"); err != nil {
		t.Fatal(err)
	}
	uni := udpOf(mac(2), mac(1), directIPA, directIPB, 1514, 2, 0x22)
	sendAll(t, a, [][]byte{uni})
	expectFrames(t, "b", receiveFrames(t, b, 1), uni)
	buf := make([]byte, 2048)
	n, err := unix.Read(fds[0], buf)
	if err != nil || !bytes.Equal(buf[:n], uni) {
		t.Fatalf("the mirror monitor read %d bytes (%v), want the unicast frame whole", n, err)
	}
	if g2g, rests := directCounts(t, e); g2g != 0 || rests != 2 {
		t.Fatalf("mirrored: %d frames guest to guest, %d through the pool; want 0 and 2", g2g, rests)
	}
}

// A spoofed frame is refused before any byte of it reaches the
// destination's memory; the next honest one goes straight.
func TestVhostGuestToGuestSpoofNeverWritten(t *testing.T) {
	e, a, b, _ := directPair(t, true, startGuest, vhostguest.Options{})
	marker := []byte("SPOOFED-FRAME-PAYLOAD-MARKER")
	spoof := udpOf(mac(2), mac(1), [4]byte{10, 1, 2, 3}, directIPB, 1514, 0, 0)
	for i := 14 + 20 + 8 + 4; i+len(marker) <= len(spoof); i += len(marker) {
		copy(spoof[i:], marker)
	}
	sendAll(t, a, [][]byte{spoof})
	waitFor(t, func() bool { return len(portsByID(t, e)[0].Drops) > 0 })
	if d := portsByID(t, e)[0].Drops; len(d) != 1 || d[0].Reason != "ipv4-src-outside" || d[0].Count != 1 {
		t.Fatalf("a's drops %v, want one ipv4-src-outside", d)
	}
	if bytes.Contains(b.Mem(), marker) {
		t.Fatal("bytes of the refused frame are in b's memory")
	}
	honest := udpOf(mac(2), mac(1), directIPA, directIPB, 1514, 1, 0x44)
	sendAll(t, a, [][]byte{honest})
	expectFrames(t, "b", receiveFrames(t, b, 1), honest)
	if g2g, rests := directCounts(t, e); g2g != 1 || rests != 0 {
		t.Fatalf("%d frames guest to guest, %d through the pool; want 1 and 0", g2g, rests)
	}
}

// A superframe for a guest that cannot take it whole is cut from the
// pool buffer: frames with offload work are never split.
func TestVhostGuestToGuestOffloadedFrameNotSplit(t *testing.T) {
	e, path := vhostSwitch(t, false, func(c *Config) { c.Offloads = true })
	a := startGuest(t, path, vhostguest.Options{Offloads: true})
	b := startGuest(t, path, vhostguest.Options{})
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 2 })
	hello := ipv4UDP(broadcast, mac(2), directIPB, [4]byte{198, 18, 255, 255})
	sendAll(t, b, [][]byte{hello})
	receiveFrames(t, a, 1)
	hdr, f := tcpSuperframeIP(mac(2), mac(1), directIPA, directIPB, 6000, 1448)
	for a.Send([][]byte{f}, []gso.VirtioNetHdr{hdr}) != 1 {
		time.Sleep(time.Millisecond)
	}
	if got := receiveFrames(t, b, 5); len(got) != 5 {
		t.Fatalf("b received %d segments, want 5", len(got))
	}
	if g2g, rests := directCounts(t, e); g2g != 0 || rests != 0 {
		t.Fatalf("%d frames guest to guest, %d rests through the pool; want 0 and 0", g2g, rests)
	}
}

// A sender that rewrites its frames' source address while the switch
// reads them, between an address it may use and one it may not (with
// the header checksum to match each), never gets the forbidden one to
// the other guest: the check and the delivery see the same head.
func TestVhostGuestToGuestRewrittenHeadNeverSpoofs(t *testing.T) {
	e, a, b, _ := directPair(t, true, startGuest, vhostguest.Options{})
	honest := udpOf(mac(2), mac(1), directIPA, directIPB, 1514, 0, 0x66)
	spoofed := udpOf(mac(2), mac(1), [4]byte{10, 1, 2, 3}, directIPB, 1514, 0, 0x66)
	// Bytes 24-29 of the frame: the IPv4 checksum and source address.
	good, bad := honest[24:30], spoofed[24:30]
	off, size, n := a.Buffers(1)
	hdrLen := a.HeaderLen()
	mem := a.Mem()
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for flip := 0; !stop.Load(); flip++ {
			src := good
			if flip%2 == 1 {
				src = bad
			}
			for i := 0; i < n; i++ {
				copy(mem[off+i*size+hdrLen+24:], src)
			}
		}
	}()
	const frames = 3000
	batch := make([][]byte, 32)
	for i := range batch {
		batch[i] = honest
	}
	bufs, sizes := make([][]byte, 64), make([]int, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	got := 0
	deadline := time.Now().Add(20 * time.Second)
	for sent := 0; sent < frames && time.Now().Before(deadline); {
		sent += a.Send(batch[:min(len(batch), frames-sent)], nil)
		k := b.Receive(bufs, sizes, nil)
		for i := 0; i < k; i++ {
			if f := bufs[i][:sizes[i]]; !bytes.Equal(f[26:30], directIPA[:]) {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("b received a frame from % x, not a's address", f[26:30])
			}
		}
		got += k
		b.PostRX(k)
		if k == 0 {
			time.Sleep(100 * time.Microsecond)
		}
	}
	stop.Store(true)
	wg.Wait()
	g2g, _ := directCounts(t, e)
	t.Logf("%d frames received, %d of them guest to guest; a's drops %v", got, g2g, portsByID(t, e)[0].Drops)
	if g2g == 0 {
		t.Fatal("no frame went guest to guest: the test did not exercise the one copy")
	}
}

// The one copy allocates nothing: counted over the whole process while
// the switch's loop moves batches between two guests.
func TestVhostGuestToGuestAllocatesNothing(t *testing.T) {
	if raceDetector {
		t.Skip("allocation counts are only meaningful without the race detector")
	}
	e, a, b, _ := directPair(t, true, startGuest, vhostguest.Options{})
	batch := make([][]byte, 32)
	for i := range batch {
		batch[i] = udpOf(mac(2), mac(1), directIPA, directIPB, 1514, i, 0x77)
	}
	sendAll(t, a, batch) // first use binds a's address
	receiveFrames(t, b, len(batch))
	bufs, sizes := make([][]byte, 64), make([]int, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	stalled := false
	before, _ := directCounts(t, e)
	allocs := testing.AllocsPerRun(20, func() {
		deadline := time.Now().Add(10 * time.Second)
		for sent, got := 0, 0; got < len(batch); {
			if time.Now().After(deadline) {
				stalled = true
				return
			}
			sent += a.Send(batch[sent:], nil)
			k := b.Receive(bufs, sizes, nil)
			got += k
			b.PostRX(k)
			if k == 0 {
				runtime.Gosched()
			}
		}
	})
	after, _ := directCounts(t, e)
	if stalled {
		t.Fatal("the frames did not arrive")
	}
	if allocs != 0 {
		t.Errorf("%.0f allocations per batch of %d frames guest to guest", allocs, len(batch))
	}
	if after-before < 21*uint64(len(batch)) {
		t.Errorf("only %d frames went guest to guest: the path was not taken", after-before)
	}
}

// A frame the receiver's buffers can never hold is dropped as its write
// would drop it (send-error on the receiver's port), and the next frame
// that fits still goes straight.
func TestVhostGuestToGuestOversizeDropped(t *testing.T) {
	e, a, b, _ := directPair(t, false, startGuest, vhostguest.Options{NoMergeRX: true, RXBufSize: 1100})
	big := udpOf(mac(2), mac(1), directIPA, directIPB, 1514, 0, 0x55)
	fits := udpOf(mac(2), mac(1), directIPA, directIPB, 1000, 1, 0x56)
	sendAll(t, a, [][]byte{big, fits})
	expectFrames(t, "b", receiveFrames(t, b, 1), fits)
	waitFor(t, func() bool { return len(portsByID(t, e)[1].Drops) > 0 })
	pb := portsByID(t, e)[1]
	if len(pb.Drops) != 1 || pb.Drops[0].Reason != "send-error" || pb.Drops[0].Count != 1 || pb.TxFrames != 1 {
		t.Fatalf("b: drops %v, %d frames sent; want one send-error and 1", pb.Drops, pb.TxFrames)
	}
	if g2g, rests := directCounts(t, e); g2g != 1 || rests != 0 {
		t.Fatalf("%d frames guest to guest, %d through the pool; want 1 and 0", g2g, rests)
	}
}
