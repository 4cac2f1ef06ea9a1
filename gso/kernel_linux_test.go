//go:build linux

package gso

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vknetd/vknetd/internal/testbed"
	"golang.org/x/sys/unix"
)

// Kernel round trips: the kernel, not this package's own code, judges what
// Split, PartialChecksum and Check do. Each test makes a namespace of its
// own with a TAP in it (198.18.9.1/24) and plays the peer 198.18.9.2 on the
// TAP's other side, writing and reading raw frames; nothing leaves the
// namespace, which is removed at cleanup even if the test fails.

// TUNSETOFFLOAD bits (include/uapi/linux/if_tun.h); x/sys/unix lacks them.
const (
	tunFCsum = 0x01
	tunFTSO4 = 0x02
	tunFTSO6 = 0x04
)

var (
	peerMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0x09, 0x02}
	nsIP     = net.IP{198, 18, 9, 1}
	peerIP   = net.IP{198, 18, 9, 2}
	peerPort = layers.TCPPort(40000)
	svcPort  = layers.TCPPort(5001)
)

type kernelTAP struct {
	f    *os.File
	vnet bool
	mac  net.HardwareAddr
	buf  []byte
}

// newKernelTAP creates a namespace with a TAP in it, addressed and up, the
// peer's MAC a permanent neighbour so the kernel never ARPs. With vnet the
// TAP has IFF_VNET_HDR and takes and gives superframes (CSUM, TSO4, TSO6).
func newKernelTAP(t *testing.T, vnet bool) (*testbed.Netns, *kernelTAP) {
	testbed.RequireRoot(t) // skips, saying why, unless root
	ns := testbed.NewNetns(t)
	ns.DisableIPv6(t) // no router solicitations or DAD among the frames read
	const name = "gsotap0"
	var fd int
	err := ns.Do(func() error {
		var err error
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if vnet {
			flags |= unix.IFF_VNET_HDR
		}
		ifr.SetUint16(flags)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF: %w", err)
		}
		if vnet {
			if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunFCsum|tunFTSO4|tunFTSO6); err != nil {
				unix.Close(fd)
				return fmt.Errorf("TUNSETOFFLOAD: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("opening a TAP in %s: %v", ns.Name, err)
	}
	tap := &kernelTAP{f: os.NewFile(uintptr(fd), name), vnet: vnet, buf: make([]byte, HdrSize+MaxFrameLen)}
	t.Cleanup(func() { tap.f.Close() })
	testbed.CheckAddr(t, "198.18.9.1/24")
	testbed.CheckAddr(t, "198.18.9.2")
	ns.Run(t, "ip", "addr", "add", "198.18.9.1/24", "dev", name)
	ns.Run(t, "ip", "link", "set", name, "up")
	ns.Run(t, "ip", "neigh", "replace", "198.18.9.2", "lladdr", peerMAC.String(), "dev", name, "nud", "permanent")
	mac := ns.LinkMAC(t, name)
	tap.mac = mac[:]
	return ns, tap
}

// write sends one frame into the namespace, after hdr if the TAP has vnet
// headers.
func (k *kernelTAP) write(t *testing.T, hdr VirtioNetHdr, frame []byte) {
	t.Helper()
	b := frame
	if k.vnet {
		b = make([]byte, HdrSize+len(frame))
		_ = hdr.Encode(b, HdrSize)
		copy(b[HdrSize:], frame)
	}
	if _, err := k.f.Write(b); err != nil {
		t.Fatalf("TAP write of %d bytes (gso %v): %v", len(frame), hdr.GSOType, err)
	}
}

// readTCP returns the next TCP frame the namespace sends (other frames are
// skipped), with its header, failing the test after the deadline.
func (k *kernelTAP) readTCP(t *testing.T, deadline time.Time) (VirtioNetHdr, []byte, *layers.TCP) {
	t.Helper()
	for {
		_ = k.f.SetReadDeadline(deadline)
		n, err := k.f.Read(k.buf)
		if err != nil {
			t.Fatalf("TAP read: %v", err)
		}
		var hdr VirtioNetHdr
		frame := k.buf[:n]
		if k.vnet {
			if err := hdr.Decode(frame, HdrSize); err != nil {
				t.Fatal(err)
			}
			frame = frame[HdrSize:]
		}
		p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
		if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
			return hdr, bytes.Clone(frame), tcp
		}
	}
}

// peerFrame builds a frame from the peer with correct checksums.
func (k *kernelTAP) peerFrame(t *testing.T, src, dst layers.TCPPort, seq, ack uint32, syn, fin bool, id uint16, payload []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: peerMAC, DstMAC: k.mac, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Id: id, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolTCP, SrcIP: peerIP, DstIP: nsIP}
	tcp := &layers.TCP{SrcPort: src, DstPort: dst, Seq: seq, Ack: ack, SYN: syn, FIN: fin, ACK: !syn || ack != 0, PSH: len(payload) > 0, Window: 65535}
	if syn {
		tcp.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}}}
	}
	_ = tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

// connectToNamespace opens a TCP connection from the peer to a listener in
// the namespace by handshaking over the TAP, and returns the accepted
// socket, the peer's next sequence number, the namespace's next one, and
// the window the namespace advertised.
func connectToNamespace(t *testing.T, ns *testbed.Netns, k *kernelTAP) (conn net.Conn, seq, ack uint32, window int) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp4", "198.18.9.1:5001")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	const iss = 1_000_000
	deadline := time.Now().Add(10 * time.Second)
	k.write(t, VirtioNetHdr{}, k.peerFrame(t, peerPort, svcPort, iss, 0, true, false, 1, nil))
	var synack *layers.TCP
	for synack == nil || !synack.SYN || !synack.ACK {
		_, _, synack = k.readTCP(t, deadline)
	}
	k.write(t, VirtioNetHdr{}, k.peerFrame(t, peerPort, svcPort, iss+1, synack.Seq+1, false, false, 2, nil))
	_ = ln.(*net.TCPListener).SetDeadline(deadline)
	conn, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept in the namespace: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	// No window scaling was offered, so the SYN-ACK's window is the window.
	return conn, iss + 1, synack.Seq + 1, int(synack.Window)
}

// readAll reads from conn until EOF (the FIN the last segment carries).
func readAll(t *testing.T, conn net.Conn, want int) []byte {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("reading in the namespace after %d of %d bytes: %v", len(got), want, err)
	}
	return got
}

// The segments Split cuts from a superframe, written one by one into a TAP
// without vnet headers (so the kernel verifies every checksum itself), make
// the byte stream the superframe carried, FIN included.
func TestKernelAcceptsSplitSegments(t *testing.T) {
	ns, k := newKernelTAP(t, false)
	conn, seq, ack, window := connectToNamespace(t, ns, k)
	payload := randomPayload(42, min(window, 60000))
	super := k.peerFrame(t, peerPort, svcPort, seq, ack, false, true, 100, payload)
	out, sizes := segmentBuffers(64, 1514)
	n, err := Split(super, VirtioNetHdr{GSOType: GSOTCPv4, GSOSize: 1448}, out, sizes, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		k.write(t, VirtioNetHdr{}, out[i][:sizes[i]])
	}
	if got := readAll(t, conn, len(payload)); !bytes.Equal(got, payload) {
		t.Fatalf("the namespace read %d bytes, not the %d the %d segments carried", len(got), len(payload), n)
	}
}

// A superframe PartialChecksum prepared, written whole with GSO_TCPV4 into
// a TAP with vnet headers, is taken by the kernel as the same byte stream.
func TestKernelAcceptsGSOWrite(t *testing.T) {
	ns, k := newKernelTAP(t, true)
	conn, seq, ack, window := connectToNamespace(t, ns, k)
	payload := randomPayload(43, min(window, 60000))
	super := k.peerFrame(t, peerPort, svcPort, seq, ack, false, true, 100, payload)
	super[24] ^= 0x55 // stale IPv4 and TCP checksums: PartialChecksum must redo both
	super[50] ^= 0x55
	hdr := VirtioNetHdr{GSOType: GSOTCPv4, GSOSize: 1448}
	if err := PartialChecksum(super, &hdr); err != nil {
		t.Fatal(err)
	}
	if r := Check(super, hdr, 1500); r != OK {
		t.Fatalf("Check of the prepared superframe: %v", r)
	}
	k.write(t, hdr, super)
	if got := readAll(t, conn, len(payload)); !bytes.Equal(got, payload) {
		t.Fatalf("the namespace read %d bytes, not the superframe's %d", len(got), len(payload))
	}
}

// The kernel's own superframes, read from a TAP with TSO on, pass Check
// (so secure mode will not drop honest traffic) and Split cuts them into
// valid segments carrying the bytes the namespace wrote.
func TestKernelSuperframesPassCheckAndSplit(t *testing.T) {
	ns, k := newKernelTAP(t, true)
	const total = 256 << 10
	data := randomPayload(44, total)
	connc := make(chan error, 1)
	go func() {
		connc <- ns.Do(func() error {
			conn, err := net.DialTimeout("tcp4", "198.18.9.2:5001", 10*time.Second)
			if err != nil {
				return err
			}
			defer conn.Close()
			_ = conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
			_, err = conn.Write(data)
			return err
		})
	}()

	deadline := time.Now().Add(20 * time.Second)
	var syn *layers.TCP
	for syn == nil || !syn.SYN {
		_, _, syn = k.readTCP(t, deadline)
	}
	client := syn.SrcPort
	const iss = 5_000_000
	k.write(t, VirtioNetHdr{}, k.peerFrame(t, svcPort, client, iss, syn.Seq+1, true, false, 1, nil))
	next := syn.Seq + 1 // the next byte of the stream the peer expects
	var got []byte
	out, sizes := segmentBuffers(64, 1514)
	superframes, id := 0, uint16(2)
	for len(got) < total {
		hdr, frame, tcp := k.readTCP(t, deadline)
		if tcp.SrcPort != client || len(tcp.Payload) == 0 {
			continue
		}
		if r := Check(frame, hdr, 1500); r != OK {
			t.Fatalf("the kernel's frame (%+v) fails Check: %v", hdr, r)
		}
		if hdr.GSOType != GSONone {
			superframes++
		}
		n, err := Split(frame, hdr, out, sizes, 0)
		if err != nil {
			t.Fatalf("Split of the kernel's frame (%+v): %v", hdr, err)
		}
		for i := range n {
			d := verifySegment(t, out[i][:sizes[i]])
			if d.tcp.Seq == next { // retransmissions of what we have are skipped
				got = append(got, d.payload...)
				next += uint32(len(d.payload))
			}
		}
		k.write(t, VirtioNetHdr{}, k.peerFrame(t, svcPort, client, iss+1, next, false, false, id, nil))
		id++
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the segments do not carry the bytes the namespace wrote")
	}
	if superframes == 0 {
		t.Fatal("the kernel sent no superframe: TSO on the TAP did not take effect, nothing was tested")
	}
	t.Logf("%d bytes in %d superframes and some plain frames", total, superframes)
	if err := <-connc; err != nil && !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the namespace's connection: %v", err)
	}
}

// The kernel's UDP superframes (a socket with UDP_SEGMENT), read from a
// TAP with USO on, pass Check and Split cuts them into the datagrams the
// kernel would have sent, each with its own length and checksum. Skipped
// on kernels without USO on TAPs (before 6.2).
func TestKernelUDPSuperframesPassCheckAndSplit(t *testing.T) {
	const tunFUSO4, tunFUSO6 = 0x20, 0x40
	ns, k := newKernelTAP(t, true)
	raw, err := k.f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ioErr error
	raw.Control(func(fd uintptr) {
		ioErr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, tunFCsum|tunFTSO4|tunFTSO6|tunFUSO4|tunFUSO6)
	})
	if errors.Is(ioErr, unix.EINVAL) {
		t.Skip("this kernel's TAP has no USO (TUN_F_USO4/6 came in Linux 6.2)")
	} else if ioErr != nil {
		t.Fatalf("TUNSETOFFLOAD with USO: %v", ioErr)
	}
	const gsoSize, total = 1000, 8500
	data := randomPayload(45, total)
	err = ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_SEGMENT, gsoSize); err != nil {
			return fmt.Errorf("UDP_SEGMENT: %w", err)
		}
		return unix.Sendto(fd, data, 0, &unix.SockaddrInet4{Port: 5002, Addr: [4]byte(peerIP.To4())})
	})
	if err != nil {
		t.Fatalf("sending a UDP superframe in %s: %v", ns.Name, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_ = k.f.SetReadDeadline(deadline)
		n, err := k.f.Read(k.buf)
		if err != nil {
			t.Fatalf("TAP read: %v (no UDP superframe came)", err)
		}
		var hdr VirtioNetHdr
		if err := hdr.Decode(k.buf[:n], HdrSize); err != nil {
			t.Fatal(err)
		}
		frame := k.buf[HdrSize:n]
		p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
		if udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); !ok || udp.DstPort != 5002 {
			continue
		}
		if hdr.GSOType != GSOUDPL4 || hdr.GSOSize != gsoSize {
			t.Fatalf("the UDP frame came with header %+v, not a USO superframe of gso_size %d", hdr, gsoSize)
		}
		if r := Check(frame, hdr, 1500); r != OK {
			t.Fatalf("the kernel's UDP superframe (%+v) fails Check: %v", hdr, r)
		}
		out, sizes := segmentBuffers(16, 1514)
		segs, err := Split(frame, hdr, out, sizes, 0)
		if err != nil {
			t.Fatalf("Split of the kernel's UDP superframe: %v", err)
		}
		var got []byte
		for i := range segs {
			seg := out[i][:sizes[i]]
			p := gopacket.NewPacket(seg, layers.LayerTypeEthernet, gopacket.Default)
			ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			udp, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if ip == nil || udp == nil {
				t.Fatalf("datagram %d is not UDP/IPv4", i)
			}
			l4 := seg[14+int(ip.IHL)*4:]
			switch {
			case Checksum(seg[14:14+int(ip.IHL)*4], 0) != 0:
				t.Errorf("datagram %d: bad IPv4 header checksum", i)
			case int(ip.Length) != len(seg)-14 || int(udp.Length) != len(l4):
				t.Errorf("datagram %d: IP length %d, UDP length %d, frame %d", i, ip.Length, udp.Length, len(seg))
			case Checksum(l4, PseudoHeaderSumIPv4(ip.SrcIP, ip.DstIP, 17, len(l4))) != 0:
				t.Errorf("datagram %d: bad UDP checksum", i)
			case len(udp.Payload) > gsoSize:
				t.Errorf("datagram %d: %d bytes of payload, gso_size %d", i, len(udp.Payload), gsoSize)
			}
			got = append(got, udp.Payload...)
		}
		if segs != (total+gsoSize-1)/gsoSize || !bytes.Equal(got, data) {
			t.Fatalf("%d datagrams carrying %d bytes, want %d carrying the %d sent", segs, len(got), (total+gsoSize-1)/gsoSize, total)
		}
		return
	}
}
