package vhostguest_test

import (
	"bytes"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/superframe"
	"github.com/vknetd/vknetd/internal/vhostguest"
	"github.com/vknetd/vknetd/vhostuser"
)

// SendFromFD and ReceiveToFD against a vhostuser.Device in this process.
// A SEQPACKET socketpair plays the TAP with IFF_VNET_HDR: each message is
// a header and its frame, which is all readv and writev see of a TAP.

// newPair starts a guest with offloads against a device offering them.
func newPair(t testing.TB, o vhostguest.Options) (*vhostguest.Guest, *vhostuser.Device) {
	t.Helper()
	o.Offloads = true
	g, err := vhostguest.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	d, err := vhostuser.NewDevice(fds[0], vhostuser.Config{Offloads: true, Note: func(s string) { t.Log(s) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	g.Attach(fds[1])
	done := make(chan struct{})
	go func() { // the device's side of the negotiation
		defer close(done)
		for !d.Ready() {
			pfd := []unix.PollFd{{Fd: int32(d.SocketFD()), Events: unix.POLLIN}}
			if n, _ := unix.Poll(pfd, 2000); n <= 0 {
				return
			}
			if _, err := d.HandleSocket(); err != nil {
				return
			}
		}
	}()
	err = g.Start()
	<-done
	if err != nil || !d.Ready() {
		t.Fatalf("Start: %v; device ready %v", err, d.Ready())
	}
	return g, d
}

// fakeTAP is a non-blocking SEQPACKET pair: the guest's end and the test's.
func fakeTAP(t testing.TB, sndbuf int) (guest, peer int) {
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
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, sndbuf)
	}
	return fds[0], fds[1]
}

// frameSizes is every size up to gso.MaxFrameLen that matters to buffer
// layout (the first 64, those around each 2 KiB and so each 16 KiB
// boundary with a 12-byte header in front, the largest) and a stride
// through the rest.
func frameSizes() []int {
	var s []int
	for n := 1; n <= 64; n++ {
		s = append(s, n)
	}
	for b := 2048; b < gso.MaxFrameLen+12+2048; b += 2048 {
		for d := -2; d <= 2; d++ {
			if n := b - 12 + d; n > 64 && n <= gso.MaxFrameLen {
				s = append(s, n)
			}
		}
	}
	for n := 65; n < gso.MaxFrameLen; n += 397 {
		s = append(s, n)
	}
	return append(s, gso.MaxFrameLen-1, gso.MaxFrameLen)
}

// testFrame is size bytes varied by seq, with a zero header.
func testFrame(size int, seq int) []byte {
	f := make([]byte, size)
	for i := range f {
		f[i] = byte(i*7 + seq)
	}
	return f
}

// tcpSuperframe is an Ethernet/IPv4/TCP frame with payload bytes and the
// header the kernel's TSO gives it, which gso.Check accepts.
func tcpSuperframe(payload int, seq byte) ([]byte, gso.VirtioNetHdr) {
	return superframe.Flow{DstMAC: [6]byte{2, 0, 0, 0, 0, 2}, SrcMAC: [6]byte{2, 0, 0, 0, 0, 1},
		SrcIP: [4]byte{198, 18, 0, 1}, DstIP: [4]byte{198, 18, 0, 2}, SrcPort: 40000, DstPort: 5201,
		MSS: 1448, Fill: seq}.TCP(payload, uint32(seq))
}

// mixedFrames is a frame of each size of frameSizes, a 64 KiB TCP
// superframe every tenth.
func mixedFrames() ([][]byte, []gso.VirtioNetHdr) {
	sizes := frameSizes()
	fs, hs := make([][]byte, len(sizes)), make([]gso.VirtioNetHdr, len(sizes))
	for i, n := range sizes {
		if i%10 == 9 {
			fs[i], hs[i] = tcpSuperframe(65535-40, byte(i))
			continue
		}
		fs[i] = testFrame(n, i)
	}
	return fs, hs
}

// message is the frame behind its fdHdr-byte header, as a TAP reads it.
func message(f []byte, h gso.VirtioNetHdr, fdHdr int) []byte {
	m := make([]byte, fdHdr+len(f))
	h.Encode(m, fdHdr)
	copy(m[fdHdr:], f)
	return m
}

func bigBufs(n int) ([][]byte, []int, []gso.VirtioNetHdr) {
	b := make([][]byte, n)
	for i := range b {
		b[i] = make([]byte, gso.MaxFrameLen)
	}
	return b, make([]int, n), make([]gso.VirtioNetHdr, n)
}

func checkFrame(t testing.TB, what string, i int, got []byte, gh gso.VirtioNetHdr, want []byte, wh gso.VirtioNetHdr) {
	t.Helper()
	gh.NumBuffers, wh.NumBuffers = 0, 0
	if !bytes.Equal(got, want) || gh != wh {
		t.Fatalf("%s: frame %d: %d bytes, header %+v; want %d bytes, %+v (bytes equal to their length: %v)",
			what, i, len(got), gh, len(want), wh, bytes.Equal(got, want[:min(len(got), len(want))]))
	}
	if wh.GSOType != gso.GSONone {
		if r := gso.Check(got, gh, 1500); r != gso.OK {
			t.Fatalf("%s: frame %d: gso.Check: %v", what, i, r)
		}
	}
}

// TestSendFromFD: frames of every size and superframes go from the fd
// to the device intact, with their headers, in order, for either header
// size of the fd; an empty frame is skipped and a too long one dropped.
func TestSendFromFD(t *testing.T) {
	for _, c := range []struct {
		fdHdr int
		o     vhostguest.Options
	}{
		{10, vhostguest.Options{}},
		{12, vhostguest.Options{}},
		{10, vhostguest.Options{TwoRegions: true}},
	} {
		t.Run(fmt.Sprintf("hdr%d/two-regions=%v", c.fdHdr, c.o.TwoRegions), func(t *testing.T) {
			g, d := newPair(t, c.o)
			fd, peer := fakeTAP(t, 4<<20)
			fs, hs := mixedFrames()
			bufs, sizes, hdrs := bigBufs(32)
			for i := 0; i < len(fs); i += 32 {
				end := min(i+32, len(fs))
				for k := i; k < end; k++ {
					h := hs[k]
					h.NumBuffers = 0x5555 // what a 12-byte TAP leaves there: must not reach the device
					if _, err := unix.Write(peer, message(fs[k], h, c.fdHdr)); err != nil {
						t.Fatal(err)
					}
				}
				m, err := g.SendFromFD(fd, c.fdHdr, 64)
				if err != nil || m.Frames != end-i || !m.SourceDry || m.SinkFull || m.Dropped != 0 {
					t.Fatalf("SendFromFD = %+v, %v; want %d frames, source dry", m, err, end-i)
				}
				n, _, err := d.ReadTX(bufs, sizes, hdrs)
				if err != nil || n != end-i {
					t.Fatalf("ReadTX = %d, %v; want %d; stats %+v", n, err, end-i, d.Stats())
				}
				for k := 0; k < n; k++ {
					checkFrame(t, "TX", i+k, bufs[k][:sizes[k]], hdrs[k], fs[i+k], hs[i+k])
					if hdrs[k].NumBuffers != 0 {
						t.Fatalf("TX: frame %d: num_buffers %#x, want 0", i+k, hdrs[k].NumBuffers)
					}
				}
			}
			for _, m := range [][]byte{make([]byte, c.fdHdr), make([]byte, c.fdHdr+gso.MaxFrameLen+1), message(fs[0], hs[0], c.fdHdr)} {
				unix.Write(peer, m)
			}
			if m, err := g.SendFromFD(fd, c.fdHdr, 64); err != nil || m.Frames != 1 || m.Dropped != 1 || m.Bytes != len(fs[0]) {
				t.Fatalf("an empty, a too long and a good frame: SendFromFD = %+v, %v", m, err)
			}
			if n, _, _ := d.ReadTX(bufs, sizes, hdrs); n != 1 || !bytes.Equal(bufs[0][:sizes[0]], fs[0]) {
				t.Fatalf("ReadTX after an empty and a too long frame: %d frames", n)
			}
			if st := d.Stats(); st.TXOversize != 0 || st.TXBadHdr != 0 {
				t.Fatalf("device stats %+v", st)
			}
		})
	}
}

// TestSendFromFDRingFull: with no chain for the longest frame free,
// SendFromFD leaves the fd's frames where they are and says so; TXRoom
// says when the device has used enough.
func TestSendFromFDRingFull(t *testing.T) {
	g, d := newPair(t, vhostguest.Options{QueueSize: 16, QuietTX: true})
	fd, peer := fakeTAP(t, 4<<20)
	f := testFrame(100, 1)
	for range 5 {
		unix.Write(peer, message(f, gso.VirtioNetHdr{}, 10))
	}
	m, err := g.SendFromFD(fd, 10, 64)
	if err != nil || m.Frames != 5 || m.SinkFull || !m.SourceDry {
		t.Fatalf("small frames: SendFromFD = %+v, %v", m, err)
	}
	// Five small frames used five descriptors: 11 left. A 40000-byte
	// frame fills three, so three of them go and the fourth waits.
	for range 4 {
		unix.Write(peer, message(testFrame(40000, 2), gso.VirtioNetHdr{}, 10))
	}
	m, err = g.SendFromFD(fd, 10, 64)
	if err != nil || m.Frames != 3 || !m.SinkFull || m.SourceDry {
		t.Fatalf("ring full: SendFromFD = %+v, %v", m, err)
	}
	if g.TXRoom() {
		t.Fatal("TXRoom with 2 descriptors free, 5 needed")
	}
	bufs, sizes, hdrs := bigBufs(16)
	if n, _, err := d.ReadTX(bufs, sizes, hdrs); n != 8 || err != nil {
		t.Fatalf("ReadTX = %d, %v", n, err)
	}
	if !g.TXRoom() {
		t.Fatal("no TXRoom after the device used every frame")
	}
	if m, err := g.SendFromFD(fd, 10, 64); m.Frames != 1 || err != nil {
		t.Fatalf("after the device made room: SendFromFD = %+v, %v", m, err)
	}
	if n, _, _ := d.ReadTX(bufs, sizes, hdrs); n != 1 || sizes[0] != 40000 {
		t.Fatalf("the frame that waited in the fd: %d frames, %d bytes", n, sizes[0])
	}
}

// recvMessages reads what the fake TAP got and checks it against
// fs[from:], returning how many it read.
func recvMessages(t testing.TB, peer, fdHdr int, fs [][]byte, hs []gso.VirtioNetHdr, from int, buf []byte) int {
	t.Helper()
	got := 0
	for from+got < len(fs) {
		n, err := unix.Read(peer, buf)
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var h gso.VirtioNetHdr
		h.Decode(buf, fdHdr)
		checkFrame(t, "RX", from+got, buf[fdHdr:n], h, fs[from+got], hs[from+got])
		got++
	}
	return got
}

// TestReceiveToFD: frames of every size and superframes go from the
// device to the fd intact with their headers, in order, over 2 KiB and
// 16 KiB merged buffers.
func TestReceiveToFD(t *testing.T) {
	for _, c := range []struct {
		fdHdr, rxBuf int
	}{{10, 2048}, {10, 16 << 10}, {12, 16 << 10}} {
		t.Run(fmt.Sprintf("hdr%d/rxbuf%d", c.fdHdr, c.rxBuf), func(t *testing.T) {
			g, d := newPair(t, vhostguest.Options{RXBufSize: c.rxBuf})
			g.PostRX(1 << 16)
			fd, peer := fakeTAP(t, 4<<20)
			fs, hs := mixedFrames()
			buf := make([]byte, 12+gso.MaxFrameLen+1)
			put, got := 0, 0
			for got < len(fs) {
				n, err := d.WriteRX(fs[put:], hs[put:])
				if err != nil {
					t.Fatal(err)
				}
				put += n
				m, err := g.ReceiveToFD(fd, c.fdHdr, 64)
				if err != nil || m.Dropped != 0 || m.SinkFull {
					t.Fatalf("ReceiveToFD = %+v, %v", m, err)
				}
				if k := recvMessages(t, peer, c.fdHdr, fs, hs, got, buf); k != m.Frames {
					t.Fatalf("ReceiveToFD wrote %d frames, the fd has %d", m.Frames, k)
				} else {
					got += k
				}
				if n == 0 && m.Frames == 0 {
					t.Fatalf("stuck at frame %d of %d (%d put); device stats %+v", got, len(fs), put, d.Stats())
				}
			}
			if st := d.Stats(); st.RXOversize != 0 {
				t.Fatalf("device stats %+v", st)
			}
		})
	}
}

// TestReceiveToFDBackPressure: a full fd leaves frames in the RX ring,
// not lost and not copied; they go, in order, when it has room again,
// and the device meanwhile fills only the buffers given back.
func TestReceiveToFDBackPressure(t *testing.T) {
	g, d := newPair(t, vhostguest.Options{RXBufSize: 16 << 10})
	g.PostRX(1 << 16)
	fd, peer := fakeTAP(t, 256<<10)
	fs, hs := make([][]byte, 40), make([]gso.VirtioNetHdr, 40)
	for i := range fs {
		fs[i], hs[i] = tcpSuperframe(65535-40, byte(i))
	}
	buf := make([]byte, 12+gso.MaxFrameLen+1)
	put, got, full := 0, 0, 0
	for round := 0; got < len(fs); round++ {
		if round > 1000 {
			t.Fatalf("stuck at %d of %d frames (%d put)", got, len(fs), put)
		}
		n, err := d.WriteRX(fs[put:], hs[put:])
		if err != nil {
			t.Fatal(err)
		}
		put += n
		m, err := g.ReceiveToFD(fd, 10, 64)
		if err != nil || m.Dropped != 0 {
			t.Fatalf("ReceiveToFD = %+v, %v", m, err)
		}
		if m.SinkFull {
			full++
			// The fd is still full: nothing more goes, nothing is lost.
			if m2, err := g.ReceiveToFD(fd, 10, 64); err != nil || m2.Frames != 0 || !m2.SinkFull {
				t.Fatalf("again on a full fd: ReceiveToFD = %+v, %v", m2, err)
			}
		}
		// Read only part of what is there, so the fd stays nearly full.
		for k := 0; k < 2 && got < len(fs); k++ {
			got += recvMessages(t, peer, 10, fs[:got+1], hs[:got+1], got, buf)
		}
	}
	if full == 0 {
		t.Fatal("the fd never pushed back")
	}
	if st := d.Stats(); st.RXOversize != 0 {
		t.Fatalf("device stats %+v", st)
	}
}

// TestFDZeroAllocs: moving frames through SendFromFD and ReceiveToFD
// allocates nothing.
func TestFDZeroAllocs(t *testing.T) {
	g, d := newPair(t, vhostguest.Options{RXBufSize: 16 << 10})
	g.PostRX(1 << 16)
	fd, peer := fakeTAP(t, 4<<20)
	f, h := tcpSuperframe(65535-40, 1)
	msg := message(f, h, 10)
	fs, hs := [][]byte{f, f, f, f}, []gso.VirtioNetHdr{h, h, h, h}
	bufs, sizes, hdrs := bigBufs(4)
	buf := make([]byte, len(msg)+1)
	round := func() {
		for range fs {
			unix.Write(peer, msg)
		}
		if m, _ := g.SendFromFD(fd, 10, 64); m.Frames != len(fs) {
			t.Fatalf("SendFromFD = %+v", m)
		}
		if n, _, _ := d.ReadTX(bufs, sizes, hdrs); n != len(fs) {
			t.Fatalf("ReadTX = %d", n)
		}
		if n, _ := d.WriteRX(fs, hs); n != len(fs) {
			t.Fatalf("WriteRX = %d", n)
		}
		if m, _ := g.ReceiveToFD(fd, 10, 64); m.Frames != len(fs) {
			t.Fatalf("ReceiveToFD = %+v", m)
		}
		for range fs {
			unix.Read(peer, buf)
		}
	}
	round()
	if a := testing.AllocsPerRun(20, round); a != 0 && !raceEnabled {
		t.Fatalf("%.1f allocations per round of %d superframes each way", a, len(fs))
	}
}

func TestFDHeaderSize(t *testing.T) {
	g, _ := newPair(t, vhostguest.Options{})
	for _, n := range []int{0, 11, 14} {
		if _, err := g.SendFromFD(-1, n, 1); err == nil {
			t.Fatalf("SendFromFD with a %d-byte header: no error", n)
		}
		if _, err := g.ReceiveToFD(-1, n, 1); err == nil {
			t.Fatalf("ReceiveToFD with a %d-byte header: no error", n)
		}
	}
}
