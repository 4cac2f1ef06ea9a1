package engine

import (
	"bytes"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/hang"
	"github.com/vknetd/vknetd/internal/vhostguest"
	"github.com/vknetd/vknetd/ring"
)

// Superframes between the TAP (with offloads, played by a socketpair) and
// vhost-user guests with and without offloads, through a running engine.

// offloadVhostSwitch is a switch with an offloading TAP and offloads for
// vhost-user guests; host is the kernel's end of the TAP.
func offloadVhostSwitch(t *testing.T, secureMode bool, largeBuffers int) (e *Engine, path string, host int) {
	tweak, host := connectTap(t)
	e, path = vhostSwitch(t, secureMode, func(c *Config) {
		tweak(c)
		c.MTU = 1500
		c.TapVnetHdr, c.Offloads = true, true
		c.LargeBuffers = largeBuffers
	})
	return e, path, host
}

// receiveWithHdrs collects n frames and their headers on g.
func receiveWithHdrs(t *testing.T, g *vhostguest.Guest, n int) ([][]byte, []gso.VirtioNetHdr) {
	t.Helper()
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, gso.MaxFrameLen)
	}
	sizes := make([]int, len(bufs))
	hdrs := make([]gso.VirtioNetHdr, len(bufs))
	var frames [][]byte
	var got []gso.VirtioNetHdr
	for deadline := time.Now().Add(5 * time.Second); len(frames) < n && time.Now().Before(deadline); {
		k := g.Receive(bufs, sizes, hdrs)
		for i := 0; i < k; i++ {
			frames = append(frames, append([]byte(nil), bufs[i][:sizes[i]]...))
			got = append(got, hdrs[i])
		}
		g.PostRX(k)
		if k == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	if len(frames) != n {
		t.Fatalf("guest received %d frames, want %d", len(frames), n)
	}
	return frames, got
}

// readTap collects n [virtio_net_hdr][frame] messages from the TAP's
// kernel end.
func readTap(t *testing.T, host, n int) ([][]byte, []gso.VirtioNetHdr) {
	t.Helper()
	buf := make([]byte, gso.HdrSize+gso.MaxFrameLen+1)
	var frames [][]byte
	var hdrs []gso.VirtioNetHdr
	for deadline := time.Now().Add(5 * time.Second); len(frames) < n && time.Now().Before(deadline); {
		m, _, err := unix.Recvfrom(host, buf, unix.MSG_DONTWAIT)
		if err == unix.EAGAIN {
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil || m < gso.HdrSize {
			t.Fatalf("TAP read: %d bytes, %v", m, err)
		}
		var h gso.VirtioNetHdr
		h.Decode(buf, gso.HdrSize)
		hdrs = append(hdrs, h)
		frames = append(frames, append([]byte(nil), buf[gso.HdrSize:m]...))
	}
	if len(frames) != n {
		t.Fatalf("TAP got %d frames, want %d", len(frames), n)
	}
	return frames, hdrs
}

func TestVhostOffloadGuestGetsTapSuperframeWhole(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	_, path, host := offloadVhostSwitch(t, false, 0)
	whole := startGuest(t, path, vhostguest.Options{Offloads: true})
	plain := startGuest(t, path, vhostguest.Options{})
	if _, recv := whole.Offloads(); recv&gso.OffloadTSO4 == 0 {
		t.Fatalf("the guest asking for offloads got none to receive (%#x)", recv)
	}
	hdr, f := tcpSuperframe(broadcast, mac(0xfe), 60000, 1448)
	if _, err := unix.Write(host, vnetMsg(hdr, f)); err != nil {
		t.Fatal(err)
	}
	frames, hdrs := receiveWithHdrs(t, whole, 1)
	if !bytes.Equal(frames[0][54:], f[54:]) || len(frames[0]) != len(f) {
		t.Fatalf("the offloading guest got %d bytes, not the %d-byte superframe", len(frames[0]), len(f))
	}
	if hdrs[0].GSOType != gso.GSOTCPv4 || hdrs[0].GSOSize != 1448 {
		t.Errorf("header %+v, want TCPv4 with gso_size 1448", hdrs[0])
	}
	if r := gso.Check(frames[0], hdrs[0], 1500); r != gso.OK {
		t.Errorf("the superframe the guest got fails gso.Check: %v", r)
	}
	per := (60000 + 1447) / 1448
	segs := receiveFrames(t, plain, per)
	checkSegments(t, segs, 1448, f[54:])
}

func TestVhostOffloadGuestSuperframeReachesTapWhole(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	e, path, host := offloadVhostSwitch(t, true, 0)
	g := startGuest(t, path, vhostguest.Options{Offloads: true})
	guestIP := [4]byte{198, 18, 1, 2}
	// A superframe from the guest's own address to the host, with a
	// partial sum the guest got wrong on purpose: the switch writes its own.
	hdr, f := tcpSuperframeIP(mac(0xfe), mac(7), guestIP, [4]byte{198, 18, 0, 1}, 30000, 1448)
	hdr.HdrLen = 7 // a hint, wrong: never trusted
	f[34+16] ^= 0x55
	if g.Send([][]byte{f}, []gso.VirtioNetHdr{hdr}) != 1 {
		t.Fatal("the guest could not send")
	}
	frames, hdrs := readTap(t, host, 1)
	if len(frames[0]) != len(f) || !bytes.Equal(frames[0][54:], f[54:]) {
		t.Fatalf("the TAP got a %d-byte frame, not the %d-byte superframe in one write", len(frames[0]), len(f))
	}
	if hdrs[0].GSOType != gso.GSOTCPv4 || hdrs[0].GSOSize != 1448 || hdrs[0].HdrLen != 54 {
		t.Errorf("TAP header %+v, want TCPv4, gso_size 1448, hdr_len 54", hdrs[0])
	}
	fixed := append([]byte(nil), f...)
	fixed[34+16] ^= 0x55
	if !bytes.Equal(frames[0][34:54], fixed[34:54]) {
		t.Error("the TCP header's partial sum was not rewritten to the pseudo-header's")
	}
	// A superframe from an address outside the network is refused, as
	// the same frame cut would be.
	_, spoof := tcpSuperframeIP(mac(0xfe), mac(7), [4]byte{10, 1, 2, 3}, [4]byte{198, 18, 0, 1}, 30000, 1448)
	g.Send([][]byte{spoof}, []gso.VirtioNetHdr{hdr})
	// A header lying about its frame: TSO for IPv6 on an IPv4 frame.
	lie := hdr
	lie.GSOType = gso.GSOTCPv6
	g.Send([][]byte{f}, []gso.VirtioNetHdr{lie})
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := e.Stats()
		drops := map[string]uint64{}
		for _, p := range st.Ports {
			for _, d := range p.Drops {
				drops[d.Reason] += d.Count
			}
		}
		if drops["ipv4-src-outside"] == 1 && drops["gso-type-mismatch"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("drops %v: want one ipv4-src-outside and one gso-type-mismatch", drops)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if m, _, err := unix.Recvfrom(host, make([]byte, 70000), unix.MSG_DONTWAIT); err != unix.EAGAIN {
		t.Fatalf("the TAP got a %d-byte frame it should not have (%v)", m, err)
	}
}

// A guest without offloads that sends a TSO header broke the protocol:
// dropped and counted.
func TestVhostHeaderWithoutOffloadsIsDropped(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	e, path, _ := offloadVhostSwitch(t, false, 0)
	g := startGuest(t, path, vhostguest.Options{})
	hdr, f := tcpSuperframe(broadcast, mac(7), 1000, 0)
	g.Send([][]byte{f}, []gso.VirtioNetHdr{hdr})
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := e.Stats()
		var n uint64
		for _, p := range st.Ports {
			for _, d := range p.Drops {
				if d.Reason == "offload-not-negotiated" {
					n += d.Count
				}
			}
		}
		if n == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d frames dropped as offload-not-negotiated, want 1", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Many superframes at once from a guest: more than the switch has large
// buffers. None is lost: those without a buffer wait in the guest's ring.
func TestVhostSuperframesOutnumberLargeBuffers(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	const large = 4
	_, path, host := offloadVhostSwitch(t, false, large)
	g := startGuest(t, path, vhostguest.Options{Offloads: true, QueueSize: 256})
	const n = 30 * large
	frames := make([][]byte, n)
	hdrs := make([]gso.VirtioNetHdr, n)
	for i := range frames {
		hdrs[i], frames[i] = tcpSuperframe(mac(0xfe), mac(7), 20000, 1448)
		frames[i][60] = byte(i)
	}
	for sent := 0; sent < n; {
		k := g.Send(frames[sent:], hdrs[sent:])
		sent += k
		if k == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	got, _ := readTap(t, host, n)
	for i := range got {
		if len(got[i]) != len(frames[i]) || got[i][60] != byte(i) {
			t.Fatalf("TAP frame %d: %d bytes, marker %d: not superframe %d whole and in order", i, len(got[i]), got[i][60], i)
		}
	}
}

// Superframes allocate nothing on any path through the switch: whole
// between guests with offloads and to the TAP, cut for a guest without,
// secure mode included. Counted over 16 superframes per run. (Only
// without the race detector, whose instrumentation allocates.)
func TestVhostSuperframesAllocateNothing(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	if raceDetector {
		t.Skip("allocation counts are only meaningful without the race detector")
	}
	const perRun = 16
	for _, secureMode := range []bool{false, true} {
		e, path, host := offloadVhostSwitch(t, secureMode, 0)
		a := startGuest(t, path, vhostguest.Options{Offloads: true})
		b := startGuest(t, path, vhostguest.Options{Offloads: true})
		c := startGuest(t, path, vhostguest.Options{})
		waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 3 })
		ip := func(last byte) [4]byte { return [4]byte{198, 18, 1, last} }
		for i, g := range []*vhostguest.Guest{b, c} {
			g.Send([][]byte{ipv4UDP(broadcast, mac(byte(2+i)), ip(byte(2+i)), [4]byte{198, 18, 255, 255})}, nil)
			receiveWithHdrs(t, a, 1)
		}
		unix.SetNonblock(host, true)
		drainFrames(t, host)
		superframe := func(dst byte) ([][]byte, []gso.VirtioNetHdr) {
			h, f := tcpSuperframeIP(mac(dst), mac(1), ip(1), ip(dst), 60000, 1448)
			frames, hdrs := make([][]byte, perRun), make([]gso.VirtioNetHdr, perRun)
			for i := range frames {
				frames[i], hdrs[i] = f, h
			}
			return frames, hdrs
		}
		bufs := make([][]byte, perRun*46)
		for i := range bufs {
			bufs[i] = make([]byte, gso.MaxFrameLen)
		}
		sizes := make([]int, len(bufs))
		hdrs := make([]gso.VirtioNetHdr, len(bufs))
		tapBuf := make([]byte, gso.HdrSize+gso.MaxFrameLen)
		// receive takes want frames on g, or superframes from the TAP's
		// kernel end when g is nil. It yields while it waits: AllocsPerRun
		// runs with GOMAXPROCS 1, and the switch's loop needs the CPU.
		receive := func(g *vhostguest.Guest, want int) func() {
			return func() {
				for got := 0; got < want; runtime.Gosched() {
					if g == nil {
						if _, err := unix.Read(host, tapBuf); err == nil {
							got++
						}
						continue
					}
					k := g.Receive(bufs, sizes, hdrs)
					g.PostRX(1 << 16)
					got += k
				}
			}
		}
		fromTap := vnetMsg(tcpSuperframeIP(mac(2), mac(0xfe), [4]byte{198, 18, 0, 1}, ip(2), 60000, 1448))
		for _, p := range []struct {
			name    string
			from    *vhostguest.Guest // nil: the TAP
			dst     byte
			receive func() // one superframe's worth
		}{
			{"guest to guest, whole", a, 2, receive(b, 1)},
			{"guest to guest without offloads, cut", a, 3, receive(c, (60000+1447)/1448)},
			{"guest to TAP, whole", a, 0xfe, receive(nil, 1)},
			{"TAP to guest, whole", nil, 2, receive(b, 1)},
		} {
			frames, fhdrs := superframe(p.dst)
			allocs := testing.AllocsPerRun(10, func() {
				// One at a time: a guest's ring holds 256 segments.
				for i := 0; i < perRun; i++ {
					if p.from == nil {
						for {
							if _, err := unix.Write(host, fromTap); err == nil {
								break
							}
							runtime.Gosched()
						}
					} else {
						for p.from.Send(frames[i:i+1], fhdrs[i:i+1]) != 1 {
							runtime.Gosched()
						}
					}
					p.receive()
				}
			})
			if allocs != 0 {
				t.Errorf("secure=%v %s: %.0f allocations per %d superframes", secureMode, p.name, allocs, perRun)
			}
		}
	}
}

// A guest whose superframes wait for a large buffer costs the switch no
// CPU while it waits (it is not read again and again in vain), and its
// frames go on, none lost, as soon as buffers are free.
func TestVhostWaitingForLargeBuffersCostsNoCPU(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	if raceDetector {
		t.Skip("CPU time under the race detector says little")
	}
	e, path, host := offloadVhostSwitch(t, false, 4)
	g := startGuest(t, path, vhostguest.Options{Offloads: true})
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 1 })
	var held []ring.Ref
	e.do(func() {
		for {
			r, ok := e.pool.GetLarge()
			if !ok {
				return
			}
			held = append(held, r)
		}
	})
	const n = 8
	hdr, f := tcpSuperframe(mac(0xfe), mac(7), 20000, 1448)
	for sent := 0; sent < n; {
		sent += g.Send([][]byte{f}, []gso.VirtioNetHdr{hdr})
	}
	time.Sleep(50 * time.Millisecond) // the kick is served, the read starves
	cpu := func() time.Duration {
		var ru unix.Rusage
		unix.Getrusage(unix.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	before := cpu()
	time.Sleep(500 * time.Millisecond)
	if used := cpu() - before; used > 50*time.Millisecond {
		t.Errorf("the switch used %v of CPU in 500ms while a guest's superframes waited for large buffers: it spins", used)
	}
	if st, _ := e.Stats(); st.Ports[1].RxFrames != 0 {
		t.Fatalf("the guest's port received %d frames with no large buffer free", st.Ports[1].RxFrames)
	}
	e.do(func() {
		for _, r := range held {
			e.pool.Release(r)
		}
	})
	readTap(t, host, n)
}
