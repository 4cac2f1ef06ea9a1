//go:build linux

package integration

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
)

// rawClient is a SEQPACKET client that sends and receives whole frames,
// one per message, like a vkernel, and knows its MAC and port.
type rawClient struct {
	*testbed.SeqpacketClient
	t    *testing.T
	mac  [6]byte
	port int // the daemon's port number, when known
}

func dialRaw(t *testing.T, path string, mac [6]byte) *rawClient {
	t.Helper()
	return &rawClient{SeqpacketClient: testbed.DialSeqpacket(t, path), t: t, mac: mac}
}

func (c *rawClient) send(frame []byte) {
	c.t.Helper()
	if err := c.TrySend(frame); err != nil {
		c.t.Fatalf("client %s (port %d): sending a %d-byte frame: %v", macString(c.mac), c.port, len(frame), err)
	}
}

var errTimeout = errors.New("timed out")

// recv returns the next frame, errTimeout when none comes within timeout,
// or nil, nil when the daemon closed the connection.
func (c *rawClient) recv(timeout time.Duration) ([]byte, error) {
	f, err := c.Recv(timeout)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, errTimeout
	case errors.Is(err, io.EOF):
		return nil, nil
	}
	return f, err
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

// testMAC is a locally administered unicast address.
func testMAC(n byte) [6]byte { return [6]byte{0x02, 0x00, 0x5e, 0x11, 0x00, n} }

func macString(m [6]byte) string { return net.HardwareAddr(m[:]).String() }

// etherTest is IEEE 802's local experimental ethertype: nothing on the
// TAP's side answers it, and -U passes it.
const etherTest = 0x88b5

// rawFrame is a minimal-size Ethernet frame with a marker payload.
func rawFrame(dst, src [6]byte, tag, seq uint32) []byte {
	payload := make([]byte, 46) // the 60-byte minimum, without the FCS
	copy(payload, markerPayload(tag, seq))
	return testbed.EthernetFrame(dst, src, etherTest, payload)
}

// udpFrame is an IPv4/UDP frame that secure mode accepts from a client
// that owns src and srcIP.
func udpFrame(dst, src [6]byte, srcIP, dstIP netip.Addr, tag, seq uint32) []byte {
	return testbed.IPv4UDP(src, dst, srcIP, dstIP, 40000, 9, markerPayload(tag, seq))
}
