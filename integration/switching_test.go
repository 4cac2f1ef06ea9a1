//go:build linux

package integration

import (
	"net/netip"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
)

// Tags name the frames of each step, so a frame that arrives where it
// should not says which step sent it.
const (
	tagLearn uint32 = 0x100 + iota
	tagUnicast
	tagBarrier
	tagBroadcast
	tagUnknown
	tagMulticast
	tagAfterAge
	tagAfterClose
	tagSpray
	tagToOwner
)

// learnAll has every client send one broadcast so the switch learns its MAC,
// and drains those broadcasts from every other client.
func learnAll(t *testing.T, cs ...*rawClient) {
	t.Helper()
	for i, c := range cs {
		c.send(rawFrame(testbed.Broadcast, c.mac, tagLearn, uint32(i)))
		for _, o := range cs {
			if o != c {
				if seq := o.expect(tagLearn, 2*time.Second); seq != uint32(i) {
					t.Fatalf("port %d got the learning broadcast of port %d where port %d's was due (a client must never get its own frames back)", o.port, cs[seq%uint32(len(cs))].port, c.port)
				}
			}
		}
	}
}

func TestLearnedUnicastReachesOnlyItsPort(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, testbed.NewNetns(t), testbed.DaemonConfig{Args: []string{"-U"}})
	a, b, c := d.connect(testMAC(1)), d.connect(testMAC(2)), d.connect(testMAC(3))
	learnAll(t, a, b, c)

	a.send(rawFrame(b.mac, a.mac, tagUnicast, 1))
	if seq := b.expect(tagUnicast, 2*time.Second); seq != 1 {
		t.Fatalf("b got unicast seq %d, want 1", seq)
	}
	// b answers with a broadcast only after it has the unicast: by then the
	// switch has queued every copy of it there will ever be.
	b.send(rawFrame(testbed.Broadcast, b.mac, tagBarrier, 0))
	a.expectNoneUntil(tagUnicast, tagBarrier)
	c.expectNoneUntil(tagUnicast, tagBarrier)
	b.expectNone(tagUnicast, 200*time.Millisecond) // exactly one copy

	s := d.Counters(t)
	if got := s.Port(t, b.port).Uint(t, "tx_frames"); got < 3 {
		t.Errorf("port %d (b) tx_frames = %d, want at least 3 (two learning broadcasts and the unicast)", b.port, got)
	}
	if got := s.Global.Uint(t, "macs"); got < 3 {
		t.Errorf("switch learned %d MACs, want at least the 3 clients'", got)
	}
}

func TestFloodReachesAllOthersNeverTheSender(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, testbed.NewNetns(t), testbed.DaemonConfig{Args: []string{"-U"}})
	a, b, c := d.connect(testMAC(1)), d.connect(testMAC(2)), d.connect(testMAC(3))
	learnAll(t, a, b, c)

	for _, step := range []struct {
		name string
		dst  [6]byte
		tag  uint32
	}{
		{"broadcast", testbed.Broadcast, tagBroadcast},
		{"unknown unicast", testMAC(99), tagUnknown},
		{"multicast", [6]byte{0x01, 0x00, 0x5e, 0x00, 0x00, 0x42}, tagMulticast},
	} {
		a.send(rawFrame(step.dst, a.mac, step.tag, 7))
		for _, o := range []*rawClient{b, c} {
			if seq := o.expect(step.tag, 2*time.Second); seq != 7 {
				t.Fatalf("%s: port %d got seq %d, want 7", step.name, o.port, seq)
			}
		}
		b.send(rawFrame(testbed.Broadcast, b.mac, tagBarrier, 0))
		a.expectNoneUntil(step.tag, tagBarrier)
		c.expect(tagBarrier, 2*time.Second)
	}
	// The TAP is a port like the others: it got every flooded frame.
	s := d.Counters(t)
	if tap := s.Ports[0]; tap["kind"] != "tap" {
		t.Fatalf("first port in the counters is %v, want the TAP", tap)
	} else if got := tap.Uint(t, "tx_frames"); got < 3+3+3 {
		t.Errorf("TAP tx_frames = %d, want at least 9 (3 learning, 3 flooded, 3 barriers)", got)
	}
}

func TestMACAgesOut(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, testbed.NewNetns(t), testbed.DaemonConfig{Args: []string{"-U", "--mac-age", "1"}})
	a, b, c := d.connect(testMAC(1)), d.connect(testMAC(2)), d.connect(testMAC(3))
	learnAll(t, a, b, c)

	a.send(rawFrame(b.mac, a.mac, tagUnicast, 1))
	b.expect(tagUnicast, 2*time.Second)
	b.send(rawFrame(testbed.Broadcast, b.mac, tagBarrier, 0))
	bLastSeen := time.Now()
	c.expectNoneUntil(tagUnicast, tagBarrier)

	// Aging is about time itself: b stays silent for 2.5 × --mac-age.
	time.Sleep(time.Until(bLastSeen.Add(2500 * time.Millisecond)))
	a.send(rawFrame(b.mac, a.mac, tagAfterAge, 2))
	if seq := c.expect(tagAfterAge, 2*time.Second); seq != 2 {
		t.Fatalf("c got seq %d, want 2", seq)
	}
	b.expect(tagAfterAge, 2*time.Second)
}

func TestMACRemovedOnDisconnect(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, testbed.NewNetns(t), testbed.DaemonConfig{Args: []string{"-U"}}) // --mac-age stays 300 s
	a, b, c := d.connect(testMAC(1)), d.connect(testMAC(2)), d.connect(testMAC(3))
	learnAll(t, a, b, c)
	a.send(rawFrame(b.mac, a.mac, tagUnicast, 1))
	b.expect(tagUnicast, 2*time.Second)
	b.send(rawFrame(testbed.Broadcast, b.mac, tagBarrier, 0))
	c.expectNoneUntil(tagUnicast, tagBarrier)

	b.Close()
	d.waitDeparture(b.port)
	a.send(rawFrame(b.mac, a.mac, tagAfterClose, 3))
	if seq := c.expect(tagAfterClose, 2*time.Second); seq != 3 {
		t.Fatalf("c got seq %d, want 3", seq)
	}
	// No entry is left behind for the departed port: every MAC the table
	// holds belongs to a live port.
	s := d.Counters(t)
	var held uint64
	for _, p := range s.Ports {
		if p["port"] == itoa(b.port) {
			t.Errorf("port %d (b) is still live after it disconnected: %v", b.port, p)
		}
		held += p.Uint(t, "macs")
	}
	if total := s.Global.Uint(t, "macs"); total != held {
		t.Errorf("switch holds %d MACs but live ports own only %d: b's entry was kept", total, held)
	}
}

func TestPortMACLimitProtectsOtherPorts(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, testbed.NewNetns(t), testbed.DaemonConfig{Args: []string{"-U", "--port-macs", "2", "--mac-max", "8", "--user-macs", "8"}})
	a, b, c := d.connect(testMAC(1)), d.connect(testMAC(2)), d.connect(testMAC(3))
	learnAll(t, a, b, c)

	// All clients are root's here, so --user-macs is as large as the table.
	// a sprays 50 source MACs: far more than the table holds.
	const spray = 50
	for i := 0; i < spray; i++ {
		a.send(rawFrame(testbed.Broadcast, testMAC(byte(100+i)), tagSpray, uint32(i)))
	}
	for i := 0; i < spray; i++ {
		if seq := c.expect(tagSpray, 2*time.Second); seq != uint32(i) {
			t.Fatalf("c got spray frame %d, want %d", seq, i)
		}
	}
	a.send(rawFrame(b.mac, a.mac, tagToOwner, 1))
	b.expect(tagToOwner, 2*time.Second)
	b.send(rawFrame(testbed.Broadcast, b.mac, tagBarrier, 0))
	c.expectNoneUntil(tagToOwner, tagBarrier)

	s := d.Counters(t)
	pa := s.Port(t, a.port)
	if got := pa.Uint(t, "macs"); got != 2 {
		t.Errorf("port %d (a) holds %d MACs, want --port-macs 2", a.port, got)
	}
	if got := pa.Uint(t, "unlearned"); got != spray-1 {
		t.Errorf("port %d (a) unlearned = %d, want %d (spray MACs past its limit)", a.port, got, spray-1)
	}
	if got := s.Port(t, b.port).Uint(t, "macs"); got != 1 {
		t.Errorf("port %d (b) holds %d MACs, want its own 1", b.port, got)
	}
}

// In secure mode the same switching holds for real IPv4 traffic.
func TestSecureModeSwitchesIPv4(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, testbed.NewNetns(t), testbed.DaemonConfig{Args: []string{"198.18.0.1/16"}})
	a, b, c := d.connect(testMAC(1)), d.connect(testMAC(2)), d.connect(testMAC(3))
	ips := map[*rawClient]netip.Addr{
		a: netip.MustParseAddr("198.18.0.10"),
		b: netip.MustParseAddr("198.18.0.11"),
		c: netip.MustParseAddr("198.18.0.12"),
	}
	bcastIP := netip.MustParseAddr("198.18.255.255")
	for i, x := range []*rawClient{a, b, c} {
		x.send(udpFrame(testbed.Broadcast, x.mac, ips[x], bcastIP, tagLearn, uint32(i)))
		for _, o := range []*rawClient{a, b, c} {
			if o != x {
				o.expect(tagLearn, 2*time.Second)
			}
		}
	}
	a.send(udpFrame(b.mac, a.mac, ips[a], ips[b], tagUnicast, 1))
	b.expect(tagUnicast, 2*time.Second)
	b.send(udpFrame(testbed.Broadcast, b.mac, ips[b], bcastIP, tagBarrier, 0))
	a.expectNoneUntil(tagUnicast, tagBarrier)
	c.expectNoneUntil(tagUnicast, tagBarrier)

	a.send(udpFrame(testMAC(99), a.mac, ips[a], netip.MustParseAddr("198.18.0.99"), tagUnknown, 2))
	b.expect(tagUnknown, 2*time.Second)
	c.expect(tagUnknown, 2*time.Second)

	for _, p := range d.Counters(t).Ports {
		if p["kind"] != "tap" {
			for k := range p {
				if len(k) > 5 && k[:5] == "drop_" {
					t.Errorf("secure mode dropped valid frames: port %s %s=%s", p["port"], k, p[k])
				}
			}
		}
	}
}
