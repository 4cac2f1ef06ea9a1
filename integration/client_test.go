//go:build linux

package integration

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"
)

// rawClient is a SEQPACKET client that sends and receives whole frames,
// one per message, like a vkernel.
type rawClient struct {
	t    *testing.T
	fd   int
	mac  [6]byte
	port int // the daemon's port number, when known
	buf  []byte
}

func dialRaw(t *testing.T, path string, mac [6]byte) *rawClient {
	t.Helper()
	c, err := tryDialRaw(path, mac)
	if err != nil {
		t.Fatal(err)
	}
	c.t = t
	t.Cleanup(c.close)
	return c
}

func tryDialRaw(path string, mac [6]byte) (*rawClient, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connecting to %s: %w", path, err)
	}
	return &rawClient{fd: fd, mac: mac, buf: make([]byte, 65536)}, nil
}

func (c *rawClient) close() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

func (c *rawClient) send(frame []byte) {
	c.t.Helper()
	for {
		_, err := unix.Write(c.fd, frame)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			c.t.Fatalf("client %s (port %d): sending a %d-byte frame: %v", macString(c.mac), c.port, len(frame), err)
		}
		return
	}
}

var errTimeout = errors.New("timed out")

// recv returns the next frame, errTimeout when none comes within timeout,
// or io.EOF-like nil,nil when the daemon closed the connection.
func (c *rawClient) recv(timeout time.Duration) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	for {
		ms := int(time.Until(deadline) / time.Millisecond)
		if ms < 0 {
			ms = 0
		}
		pfd := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("poll: %w", err)
		}
		if n == 0 {
			return nil, errTimeout
		}
		m, err := unix.Read(c.fd, c.buf)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err != nil {
			return nil, err
		}
		return append([]byte(nil), c.buf[:m]...), nil
	}
}

// expect waits for a test frame with tag and returns its sequence number,
// skipping anything else (the TAP's own IPv6 and ARP chatter, other tags).
func (c *rawClient) expect(tag uint32, timeout time.Duration) uint32 {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f, err := c.recv(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("client %s (port %d) waited %v for frame %s: %v", macString(c.mac), c.port, timeout, tagName(tag), err)
		}
		if len(f) == 0 {
			c.t.Fatalf("client %s (port %d): the daemon closed the connection while waiting for frame %s", macString(c.mac), c.port, tagName(tag))
		}
		if got, seq, ok := marker(f); ok && got == tag {
			return seq
		}
	}
}

// expectEOF reads (and discards) frames until the daemon closes the
// connection.
func (c *rawClient) expectEOF(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f, err := c.recv(time.Until(deadline))
		if err != nil {
			c.t.Errorf("client %s (port %d): waiting %v for the daemon to close the connection: %v", macString(c.mac), c.port, timeout, err)
			return
		}
		if len(f) == 0 {
			return
		}
	}
}

// expectNoneUntil reads until a frame with barrier arrives and fails if a
// frame with tag comes first. The switch keeps each port's frames in
// order, so when barrier was sent after tag was fully handled, seeing the
// barrier proves tag was never queued for this client.
func (c *rawClient) expectNoneUntil(tag, barrier uint32) {
	c.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		f, err := c.recv(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("client %s (port %d) waited for barrier frame %s: %v", macString(c.mac), c.port, tagName(barrier), err)
		}
		got, _, ok := marker(f)
		if !ok {
			continue
		}
		switch got {
		case tag:
			c.t.Errorf("client %s (port %d) received frame %s, which was not for it:\n%x", macString(c.mac), c.port, tagName(tag), f)
		case barrier:
			return
		}
	}
}

// expectNone fails if a frame with tag arrives within window.
func (c *rawClient) expectNone(tag uint32, window time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(window)
	for {
		f, err := c.recv(time.Until(deadline))
		if errors.Is(err, errTimeout) {
			return
		}
		if err != nil {
			c.t.Fatalf("client %s (port %d): %v", macString(c.mac), c.port, err)
		}
		if got, _, ok := marker(f); ok && got == tag {
			c.t.Errorf("client %s (port %d) received frame %s, which was not for it:\n%x", macString(c.mac), c.port, tagName(tag), f)
		}
	}
}

// Test frames carry a marker anywhere in their payload: "VKIT", a tag
// naming the step of the test, and a sequence number.
var markerMagic = []byte("VKIT")

func markerPayload(tag, seq uint32) []byte {
	p := make([]byte, 12, 46)
	copy(p, markerMagic)
	binary.BigEndian.PutUint32(p[4:], tag)
	binary.BigEndian.PutUint32(p[8:], seq)
	return p
}

func marker(frame []byte) (tag, seq uint32, ok bool) {
	i := bytes.Index(frame, markerMagic)
	if i < 0 || len(frame) < i+12 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint32(frame[i+4:]), binary.BigEndian.Uint32(frame[i+8:]), true
}

func tagName(tag uint32) string { return fmt.Sprintf("tag %#x", tag) }

var broadcastMAC = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// testMAC is a locally administered unicast address.
func testMAC(n byte) [6]byte { return [6]byte{0x02, 0x00, 0x5e, 0x11, 0x00, n} }

func macString(m [6]byte) string { return net.HardwareAddr(m[:]).String() }

// etherTest is IEEE 802's local experimental ethertype: nothing on the
// TAP's side answers it, and -U passes it.
const etherTest = 0x88b5

// rawFrame is a minimal-size Ethernet frame with a marker payload.
func rawFrame(dst, src [6]byte, tag, seq uint32) []byte {
	f := make([]byte, 60)
	copy(f[0:], dst[:])
	copy(f[6:], src[:])
	binary.BigEndian.PutUint16(f[12:], etherTest)
	copy(f[14:], markerPayload(tag, seq))
	return f
}

// udpFrame is an IPv4/UDP frame that secure mode accepts from a client
// that owns src and srcIP.
func udpFrame(t *testing.T, dst, src [6]byte, srcIP, dstIP netip.Addr, tag, seq uint32) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: src[:], DstMAC: dst[:], EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: srcIP.AsSlice(), DstIP: dstIP.AsSlice()}
	udp := &layers.UDP{SrcPort: 40000, DstPort: 9}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, eth, ip, udp, gopacket.Payload(markerPayload(tag, seq)))
}

// arpRequest is a broadcast who-has targetIP from src/srcIP.
func arpRequest(t *testing.T, src [6]byte, srcIP, targetIP netip.Addr) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: src[:], DstMAC: broadcastMAC[:], EthernetType: layers.EthernetTypeARP}
	arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest,
		SourceHwAddress: src[:], SourceProtAddress: srcIP.AsSlice(),
		DstHwAddress: make([]byte, 6), DstProtAddress: targetIP.AsSlice()}
	return serialize(t, eth, arp)
}

func serialize(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("building a frame: %v", err)
	}
	return buf.Bytes()
}
