package engine

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/hang"
	"github.com/vknetd/vknetd/internal/superframe"
	"github.com/vknetd/vknetd/mactable"
)

// The TAP with offloads, played by a SEQPACKET socketpair whose host end
// writes [virtio_net_hdr][frame] messages, as an IFF_VNET_HDR TAP hands
// them over (a socketpair keeps message boundaries and readv scatters a
// message as read does a TAP's frame).

var (
	tsoSrcIP = [4]byte{198, 18, 0, 1}
	tsoDstIP = [4]byte{198, 18, 1, 2}
)

// tcpSuperframe builds what the host's stack hands a TAP with TSO4: one
// Ethernet/IPv4/TCP frame with payload bytes of data, the pseudo-header sum
// in the TCP checksum field, and its header (NEEDS_CSUM, TCPV4, gso_size
// mss). mss 0 makes a plain NEEDS_CSUM frame (GSO none).
func tcpSuperframe(dst, src [6]byte, payload, mss int) (gso.VirtioNetHdr, []byte) {
	return tcpSuperframeIP(dst, src, tsoSrcIP, tsoDstIP, payload, mss)
}

// tcpSuperframeIP is tcpSuperframe between given IPv4 addresses.
func tcpSuperframeIP(dst, src [6]byte, srcIP, dstIP [4]byte, payload, mss int) (gso.VirtioNetHdr, []byte) {
	f, h := superframe.Flow{DstMAC: dst, SrcMAC: src, SrcIP: srcIP, DstIP: dstIP, SrcPort: 40000, DstPort: 5201,
		MSS: mss}.TCP(payload, 1000)
	return h, f
}

func vnetMsg(hdr gso.VirtioNetHdr, frame []byte) []byte {
	msg := make([]byte, gso.HdrSize+len(frame))
	if err := hdr.Encode(msg, gso.HdrSize); err != nil {
		panic(err)
	}
	copy(msg[gso.HdrSize:], frame)
	return msg
}

// newOffloadSwitch is an unsecure switch whose TAP carries virtio_net_hdr,
// with one SEQPACKET client; host is the kernel's end of the TAP.
func newOffloadSwitch(t *testing.T) (s *testSwitch, host int, cl *testClient) {
	tweak, host := connectTap(t)
	s = newTestSwitch(t, false, mactable.Config{}, func(c *Config) { tweak(c); c.TapVnetHdr = true })
	cl = s.connect()
	bigRcvbuf(t, cl.fd)
	return s, host, cl
}

func bigRcvbuf(t *testing.T, fd int) {
	t.Helper()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
		t.Fatal(err)
	}
}

// checkSegments decodes frames with gopacket and checks each is a valid
// TCPv4 segment of at most mss bytes (lengths and both checksums), in
// sequence, together carrying want.
func checkSegments(t *testing.T, frames [][]byte, mss int, want []byte) {
	t.Helper()
	var got []byte
	seq := uint32(1000)
	for i, f := range frames {
		if len(f) > 1514 {
			t.Fatalf("segment %d: %d bytes, longer than an MTU frame", i, len(f))
		}
		pkt := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
		if el := pkt.ErrorLayer(); el != nil {
			t.Fatalf("segment %d: %v", i, el.Error())
		}
		ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ip == nil || tcp == nil {
			t.Fatalf("segment %d: not TCP/IPv4", i)
		}
		if int(ip.Length) != len(f)-14 {
			t.Errorf("segment %d: IP length %d, frame %d", i, ip.Length, len(f))
		}
		if gso.Checksum(f[14:34], 0) != 0 {
			t.Errorf("segment %d: bad IPv4 header checksum", i)
		}
		l4 := f[34:]
		if gso.Checksum(l4, gso.PseudoHeaderSumIPv4(ip.SrcIP, ip.DstIP, 6, len(l4))) != 0 {
			t.Errorf("segment %d: bad TCP checksum %#04x", i, tcp.Checksum)
		}
		if len(tcp.Payload) > mss {
			t.Errorf("segment %d: %d bytes of payload, MSS %d", i, len(tcp.Payload), mss)
		}
		if tcp.Seq != seq {
			t.Errorf("segment %d: seq %d, want %d", i, tcp.Seq, seq)
		}
		if last := i == len(frames)-1; tcp.PSH != last {
			t.Errorf("segment %d: PSH %v", i, tcp.PSH)
		}
		seq += uint32(len(tcp.Payload))
		got = append(got, tcp.Payload...)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("segments carry %d bytes that differ from the superframe's %d", len(got), len(want))
	}
}

// A superframe from the TAP reaches a SEQPACKET client (no offloads) as
// valid MTU frames: switched whole and cut for the client (the usual way),
// or, when every large buffer is in use, cut as the TAP reads it.
func TestTapSuperframeReachesSeqpacketClientAsMTUFrames(t *testing.T) {
	for _, noLarge := range []bool{false, true} {
		name := "switched whole, cut for the client"
		if noLarge {
			name = "no large buffer free, cut when read"
		}
		t.Run(name, func(t *testing.T) {
			defer hang.Guard(t, hang.Switch)()
			s, host, cl := newOffloadSwitch(t)
			if noLarge {
				for {
					if _, ok := s.e.pool.GetLarge(); !ok {
						break
					}
				}
			}
			const mss = 1448
			payload := 65535 - 40
			hdr, f := tcpSuperframe(broadcast, mac(0xfe), payload, mss)
			for i := 0; i < 3; i++ { // three: the second does not fit the first read's buffers
				if _, err := unix.Write(host, vnetMsg(hdr, f)); err != nil {
					t.Fatal(err)
				}
			}
			s.pump()
			frames := cl.recv(t)
			per := (payload + mss - 1) / mss
			if len(frames) != 3*per {
				t.Fatalf("client got %d frames, want %d (drops %v)", len(frames), 3*per, s.e.ports.get(0).cnt.drops)
			}
			for i := 0; i < 3; i++ {
				checkSegments(t, frames[i*per:(i+1)*per], mss, f[54:])
			}
			tp := s.e.ports.get(0)
			// Cut as read, the TAP's frames are the segments; either
			// way each superframe is cut once, on the one cutting path.
			wantRx := uint64(3)
			if noLarge {
				wantRx = uint64(3 * per)
			}
			if tp.cnt.rxFrames != wantRx {
				t.Errorf("TAP rx %d frames, want %d", tp.cnt.rxFrames, wantRx)
			}
			if got := s.l.io.superframesCut; got != 3 {
				t.Errorf("%d superframes cut, want 3", got)
			}
		})
	}
}

func TestTapNeedsCsumFrameIsCompleted(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	s, host, cl := newOffloadSwitch(t)
	hdr, f := tcpSuperframe(broadcast, mac(0xfe), 300, 0)
	hdr.Flags |= gso.FlagDataValid
	unix.Write(host, vnetMsg(hdr, f))
	s.pump()
	frames := cl.recv(t)
	if len(frames) != 1 || len(frames[0]) != len(f) {
		t.Fatalf("client got %d frames, want 1 of %d bytes", len(frames), len(f))
	}
	checkSegments(t, frames, 1500, f[54:])
}

func TestTapLyingHeaderIsDroppedAndCounted(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	s, host, cl := newOffloadSwitch(t)
	_, good := tcpSuperframe(broadcast, mac(0xfe), 4000, 1448)
	lies := []gso.VirtioNetHdr{
		{Flags: gso.FlagNeedsCsum, GSOType: gso.GSOTCPv6, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}, // not IPv6
		{Flags: gso.FlagNeedsCsum, GSOType: gso.GSOTCPv4, GSOSize: 0, CsumStart: 34, CsumOffset: 16},    // gso_size 0
		{Flags: gso.FlagNeedsCsum, GSOType: gso.GSOTCPv4, GSOSize: 9000, CsumStart: 34, CsumOffset: 16}, // past the MTU
		{GSOType: gso.GSOTCPv4, GSOSize: 1448},                                                          // no NEEDS_CSUM
		{Flags: gso.FlagNeedsCsum, GSOType: gso.GSOTCPv4, GSOSize: 1448, CsumStart: 20, CsumOffset: 16}, // csum_start wrong
		{Flags: 0x40, GSOType: gso.GSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16},              // unknown flag
	}
	for _, h := range lies {
		unix.Write(host, vnetMsg(h, good))
	}
	// A superframe whose gso_size cuts it into more frames than a read
	// may fill.
	_, small := tcpSuperframe(broadcast, mac(0xfe), 60000, 0)
	unix.Write(host, vnetMsg(gso.VirtioNetHdr{Flags: gso.FlagNeedsCsum, GSOType: gso.GSOTCPv4, GSOSize: 100,
		CsumStart: 34, CsumOffset: 16}, small))
	s.pump()
	if got := cl.recv(t); len(got) != 0 {
		t.Errorf("client got %d frames from lying headers", len(got))
	}
	c := s.e.ports.get(0).cnt
	want := map[gso.Reason]uint64{gso.GSOTypeMismatch: 1, gso.GSOSizeInvalid: 2, gso.CsumMissing: 1,
		gso.CsumOffsetInvalid: 1, gso.FlagsInvalid: 1}
	for r := gso.Reason(1); r < gso.NumReasons; r++ {
		if c.gsoDrops[r] != want[r] {
			t.Errorf("%d dropped as %s, want %d", c.gsoDrops[r], r, want[r])
		}
	}
	if c.drops[DropGSOSegments] != 1 || c.drops[DropGSOInvalid] != 0 {
		t.Errorf("drops: %d gso-too-many-segments (want 1), %d gso-invalid (want 0)",
			c.drops[DropGSOSegments], c.drops[DropGSOInvalid])
	}
}

func TestTapWritesCarryZeroVnetHdr(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	s, host, cl := newOffloadSwitch(t)
	f := ethFrame(mac(0xfe), mac(1), 0x88b5, 200)
	cl.send(t, f)
	s.pump()
	got := drainFrames(t, host)
	want := append(make([]byte, gso.HdrSize), f...)
	if len(got) != 1 || !bytes.Equal(got[0], want) {
		t.Fatalf("TAP got %d messages, want one [zero header][frame]", len(got))
	}
}

func TestTapSuperframesAllocateNothing(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	s, host, cl := newOffloadSwitch(t)
	hdr, f := tcpSuperframe(broadcast, mac(0xfe), 65535-40, 1448)
	msg := vnetMsg(hdr, f)
	buf := make([]byte, 4096)
	tp := s.e.ports.get(0)
	const perRun = 4
	unix.SetNonblock(cl.fd, true)
	before := cl.port.cnt.txFrames
	allocs := testing.AllocsPerRun(20, func() {
		for i := 0; i < perRun; i++ {
			unix.Write(host, msg)
		}
		for i := 0; i < 2*perRun; i++ {
			s.l.step(0) // the loop itself: a round reads the TAP once
		}
		for {
			if n, err := unix.Read(cl.fd, buf); err != nil || n == 0 {
				break
			}
		}
	})
	if allocs != 0 {
		t.Errorf("%.0f allocations per %d superframes", allocs, perRun)
	}
	if sent := cl.port.cnt.txFrames - before; sent < 21*perRun*46 {
		t.Errorf("only %d frames reached the client (drops %v)", sent, tp.cnt.drops)
	}
}

// A monitor sees a superframe as it crossed the switch, whole, while a
// client without offloads beside it gets the cut.
func TestMonitorSeesSuperframeWhole(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	s, host, cl := newOffloadSwitch(t)
	mon := attachMirror(t, s, "all")
	hdr, f := tcpSuperframe(broadcast, mac(0xfe), 20000, 1448)
	if _, err := unix.Write(host, vnetMsg(hdr, f)); err != nil {
		t.Fatal(err)
	}
	s.pump()
	if got := cl.recv(t); len(got) != (20000+1447)/1448 {
		t.Fatalf("client got %d frames, want the %d segments", len(got), (20000+1447)/1448)
	}
	buf := make([]byte, 70000)
	n, err := unix.Read(mon, buf)
	if err != nil || n != len(f) {
		t.Fatalf("monitor read %d bytes (%v), want the %d-byte superframe", n, err, len(f))
	}
	if !bytes.Equal(buf[54:n], f[54:]) || !bytes.Equal(buf[:14], f[:14]) {
		t.Error("the monitor's superframe differs from the one the host sent")
	}
}

// udpSuperframe is what the host's stack hands a TAP with USO for a UDP
// socket with UDP_SEGMENT: payload bytes cut every mss bytes.
func udpSuperframe(dst, src [6]byte, payload, mss int) (gso.VirtioNetHdr, []byte) {
	f, h := superframe.Flow{DstMAC: dst, SrcMAC: src, SrcIP: tsoSrcIP, DstIP: tsoDstIP, SrcPort: 40000, DstPort: 443,
		MSS: mss}.UDP(payload)
	return h, f
}

// A UDP superframe from the host (USO) reaches a client without offloads
// as the datagrams the kernel would have sent, each with its own length
// and checksum.
func TestTapUDPSuperframeReachesSeqpacketClientAsDatagrams(t *testing.T) {
	for _, c := range []struct{ mss, payload int }{{1200, 10000}, {500, 64000}} { // 64000: 128 datagrams, UDP_MAX_SEGMENTS
		t.Run(strconv.Itoa((c.payload+c.mss-1)/c.mss)+" datagrams", func(t *testing.T) { tapUDPSuperframe(t, c.mss, c.payload) })
	}
}

func tapUDPSuperframe(t *testing.T, mss, payload int) {
	defer hang.Guard(t, hang.Switch)()
	s, host, cl := newOffloadSwitch(t)
	hdr, f := udpSuperframe(broadcast, mac(0xfe), payload, mss)
	if _, err := unix.Write(host, vnetMsg(hdr, f)); err != nil {
		t.Fatal(err)
	}
	s.pump()
	frames := cl.recv(t)
	if want := (payload + mss - 1) / mss; len(frames) != want {
		t.Fatalf("client got %d frames, want %d datagrams (drops %v %v)", len(frames), want,
			s.e.ports.get(0).cnt.drops, s.e.ports.get(0).cnt.gsoDrops)
	}
	var got []byte
	for i, d := range frames {
		l4 := d[34:]
		switch {
		case gso.Checksum(d[14:34], 0) != 0:
			t.Errorf("datagram %d: bad IPv4 header checksum", i)
		case int(binary.BigEndian.Uint16(d[16:])) != len(d)-14 || int(binary.BigEndian.Uint16(l4[4:])) != len(l4):
			t.Errorf("datagram %d: IP or UDP length wrong for %d bytes", i, len(d))
		case gso.Checksum(l4, gso.PseudoHeaderSumIPv4(tsoSrcIP[:], tsoDstIP[:], 17, len(l4))) != 0:
			t.Errorf("datagram %d: bad UDP checksum", i)
		case len(l4)-8 > mss:
			t.Errorf("datagram %d: %d bytes of payload, gso_size %d", i, len(l4)-8, mss)
		}
		got = append(got, l4[8:]...)
	}
	if !bytes.Equal(got, f[42:]) {
		t.Error("the datagrams do not carry the superframe's payload")
	}
}
