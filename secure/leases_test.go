package secure

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
)

func dhcpConfig(v6 bool) Config {
	cfg := testConfig(v6)
	cfg.IPSource = IPSourceDHCP
	return cfg
}

// snoop hands the policy a reply frame from the TAP, as the engine does,
// with the client port the reply goes to.
func snoop(t *testing.T, p *Policy, frame []byte, port uint32, now int64) bool {
	t.Helper()
	m, ok := ParseDHCPReply(frame)
	if !ok {
		t.Fatalf("not a DHCP reply: % x", frame)
	}
	return p.SnoopReply(&m, port, now)
}

func releaseFrame(ethSrc, chaddr [6]byte, addr string) []byte {
	f := dhcpFrame(ethSrc, chaddr, addr, layers.DHCPMsgTypeRelease, nil)
	copy(f[14+20+8+bootpCiaddr:], ip(addr).To4())
	// The UDP checksum is not checked by the switch; leave it stale.
	return f
}

const sec = int64(time.Second)

func TestParseIPSource(t *testing.T) {
	for s, want := range map[string]IPSource{"first-use": IPSourceFirstUse, "dhcp": IPSourceDHCP} {
		if got, err := ParseIPSource(s); err != nil || got != want || got.String() != s {
			t.Errorf("ParseIPSource(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseIPSource("static"); err == nil || err.Error() != `--ip-source "static": want first-use or dhcp` {
		t.Errorf("ParseIPSource(static) error %v", err)
	}
	if p := newTestPolicy(t, dhcpConfig(false)); p.IPSource() != IPSourceDHCP || !p.Leases() {
		t.Error("a dhcp policy does not say so")
	}
	if p := newTestPolicy(t, testConfig(false)); p.IPSource() != IPSourceFirstUse || p.Leases() {
		t.Error("a first-use policy says dhcp")
	}
}

// TestLeaseBindings: with --ip-source dhcp a client uses the addresses
// leased to its MAC on its port, for the lease time, and no other.
func TestLeaseBindings(t *testing.T) {
	p := newTestPolicy(t, dhcpConfig(false))
	c := p.NewChecker()
	expect := func(name string, frame []byte, port uint32, now int64, want Reason) {
		t.Helper()
		if r := c.FromClient(frame, port, now); r != want {
			t.Errorf("%s: %v, want %v (%s)", name, r, want, c.Describe())
		}
	}
	expect("before any lease", tcpFrame(macA, ipA, tapIP), portA, 1, IPNotLeased)
	expect("ARP before any lease", arpFrame(macA, layers.ARPReply, macA, ipA, tapIP), portA, 1, IPNotLeased)
	expect("DHCP discover from 0.0.0.0", dhcpFrame(macA, macA, "0.0.0.0", layers.DHCPMsgTypeDiscover, nil), portA, 1, Pass)
	expect("ARP probe", arpFrame(macA, layers.ARPRequest, macA, "0.0.0.0", ipA), portA, 1, Pass)
	if p.NumBindings() != 0 || p.NumLeases() != 0 {
		t.Fatalf("refused frames left %d bindings, %d leases", p.NumBindings(), p.NumLeases())
	}

	if !snoop(t, p, ackFrame(macA, ipA, 60), portA, 10*sec) {
		t.Fatal("the ACK leased nothing")
	}
	expect("leased address", tcpFrame(macA, ipA, tapIP), portA, 11*sec, Pass)
	expect("leased address in ARP", arpFrame(macA, layers.ARPReply, macA, ipA, tapIP), portA, 11*sec, Pass)
	expect("DHCP renewal from the leased address", dhcpFrame(macA, macA, ipA, layers.DHCPMsgTypeRequest, nil), portA, 11*sec, Pass)
	expect("another address", tcpFrame(macA, ipB, tapIP), portA, 11*sec, IPNotLeased)
	expect("another address in ARP", arpFrame(macA, layers.ARPReply, macA, ipB, tapIP), portA, 11*sec, IPNotLeased)
	expect("the address from another MAC", tcpFrame(macB, ipA, tapIP), portB, 11*sec, IPNotLeased)
	expect("the address from the MAC on another port", tcpFrame(macA, ipA, tapIP), portB, 11*sec, IPNotLeased)
	expect("the TAP's address", tcpFrame(macA, tapIP, tapIP), portA, 11*sec, TapAddrClaimed)
	expect("outside the network", tcpFrame(macA, "10.0.0.1", tapIP), portA, 11*sec, IPv4SrcOutside)
	if p.NumBindings() != 0 {
		t.Errorf("%d first-use bindings in dhcp mode", p.NumBindings())
	}
	got := map[netip.Addr]bound{}
	p.Bindings(func(b Binding) {
		if b.Source != Lease || b.Expires != 70*sec {
			t.Errorf("Bindings lists %v as %v until %d, want a lease until %d", b.IP, b.Source, b.Expires, 70*sec)
		}
		got[b.IP] = bound{b.MAC, b.Port}
	})
	if len(got) != 1 || got[netip.MustParseAddr(ipA)] != (bound{macA, portA}) {
		t.Errorf("Bindings lists %v, want the lease of %s", got, ipA)
	}
	p.EachLease(func(a netip.Addr, m [6]byte, port uint32, end int64) {
		if end != 70*sec {
			t.Errorf("lease of %v ends at %d, want %d", a, end, 70*sec)
		}
	})

	// The lease ends at its time exactly, even before a sweep.
	expect("last ns of the lease", tcpFrame(macA, ipA, tapIP), portA, 70*sec-1, Pass)
	expect("lease ended", tcpFrame(macA, ipA, tapIP), portA, 70*sec, IPNotLeased)
	if n := p.Expire(70*sec - 1); n != 0 {
		t.Errorf("Expire before the end released %d", n)
	}
	if n := p.Expire(70 * sec); n != 1 || p.NumLeases() != 0 {
		t.Errorf("Expire at the end released %d, %d leases left", n, p.NumLeases())
	}
}

// TestLeaseRenewAndMove: a new ACK renews a lease; the address leased to
// another client moves to it (the server decides).
func TestLeaseRenewAndMove(t *testing.T) {
	p := newTestPolicy(t, dhcpConfig(false))
	c := p.NewChecker()
	snoop(t, p, ackFrame(macA, ipA, 60), portA, 0)
	snoop(t, p, ackFrame(macA, ipA, 60), portA, 50*sec)
	if r := c.FromClient(tcpFrame(macA, ipA, tapIP), portA, 100*sec); r != Pass {
		t.Errorf("after a renewal: %v", r)
	}
	snoop(t, p, ackFrame(macB, ipA, 60), portB, 101*sec)
	if r := c.FromClient(tcpFrame(macA, ipA, tapIP), portA, 102*sec); r != IPNotLeased {
		t.Errorf("old holder after the address moved: %v", r)
	}
	if r := c.FromClient(tcpFrame(macB, ipA, tapIP), portB, 102*sec); r != Pass {
		t.Errorf("new holder: %v", r)
	}
	snoop(t, p, ackFrame(macB, ipB, 0xffffffff), portB, 103*sec)
	if r := c.FromClient(tcpFrame(macB, ipB, tapIP), portB, 1<<62); r != Pass {
		t.Errorf("infinite lease: %v", r)
	}
	if p.Expire(1<<62) != 1 || p.NumLeases() != 1 {
		t.Errorf("Expire: want the finite lease gone and the infinite one kept, %d left", p.NumLeases())
	}
}

// TestLeaseEnds: a DHCPRELEASE from its holder, a DHCPNAK for its MAC, or
// the client's port going ends a lease; nothing else does.
func TestLeaseEnds(t *testing.T) {
	p := newTestPolicy(t, dhcpConfig(false))
	c := p.NewChecker()
	snoop(t, p, ackFrame(macA, ipA, 600), portA, 0)
	snoop(t, p, ackFrame(macB, ipB, 600), portB, 0)

	// A release naming B's address, from A's own: A's frame passes (it is
	// A's lease it comes from) but B keeps its lease.
	f := releaseFrame(macA, macA, ipA)
	copy(f[14+20+8+bootpCiaddr:], ip(ipB).To4())
	if r := c.FromClient(f, portA, sec); r != Pass || p.NumLeases() != 2 {
		t.Fatalf("release of another's address: %v, %d leases", r, p.NumLeases())
	}
	if r := c.FromClient(releaseFrame(macB, macA, ipB), portB, sec); r != DHCPClientMismatch || p.NumLeases() != 2 {
		t.Fatalf("release in another's name: %v, %d leases", r, p.NumLeases())
	}
	if r := c.FromClient(releaseFrame(macA, macA, ipA), portA, sec); r != Pass {
		t.Fatalf("release: %v", r)
	}
	if r := c.FromClient(tcpFrame(macA, ipA, tapIP), portA, 2*sec); r != IPNotLeased {
		t.Errorf("after the release: %v", r)
	}

	snoop(t, p, ackFrame(macA, ipA, 600), portA, 3*sec)
	snoop(t, p, nakFrame(macA), 0, 4*sec)
	if r := c.FromClient(tcpFrame(macA, ipA, tapIP), portA, 5*sec); r != IPNotLeased {
		t.Errorf("after a NAK: %v", r)
	}
	if r := c.FromClient(tcpFrame(macB, ipB, tapIP), portB, 5*sec); r != Pass {
		t.Errorf("B after A's NAK: %v", r)
	}
	p.RemovePort(portB)
	if p.NumLeases() != 0 {
		t.Errorf("%d leases after B's port went", p.NumLeases())
	}
}

// TestLeaseRefused: the replies that lease nothing.
func TestLeaseRefused(t *testing.T) {
	cfg := dhcpConfig(false)
	cfg.MaxBindings = 2
	p := newTestPolicy(t, cfg)
	for name, f := range map[string][]byte{
		"ACK to an INFORM":       serverFrame(macA, "0.0.0.0", layers.DHCPMsgTypeAck),
		"ACK without lease time": serverFrame(macA, ipA, layers.DHCPMsgTypeAck),
		"outside the network":    ackFrame(macA, "10.0.0.1", 60),
		"the TAP's address":      ackFrame(macA, tapIP, 60),
		"the broadcast address":  ackFrame(macA, "198.18.255.255", 60),
	} {
		if snoop(t, p, f, portA, 0) || p.NumLeases() != 0 {
			t.Errorf("%s: leased", name)
		}
	}
	snoop(t, p, ackFrame(macA, "198.18.0.20", 60), portA, 0)
	snoop(t, p, ackFrame(macA, "198.18.0.21", 60), portA, 0)
	if snoop(t, p, ackFrame(macA, "198.18.0.22", 60), portA, 0) || p.NumLeases() != 2 {
		t.Errorf("a full table took a lease: %d", p.NumLeases())
	}
	if !snoop(t, p, ackFrame(macA, "198.18.0.21", 60), portA, 0) {
		t.Error("a full table refused a renewal")
	}
	// First-use mode ignores replies.
	if fu := newTestPolicy(t, testConfig(false)); snoop(t, fu, ackFrame(macA, ipA, 60), portA, 0) {
		t.Error("first-use policy took a lease")
	}
}

// TestLeaseIPv6: with --ipv6, --ip-source dhcp binds global IPv6 addresses
// from DHCPv6 Replies; link-local ones, which no server hands out, are
// bound on first use as before.
func TestLeaseIPv6(t *testing.T) {
	p := newTestPolicy(t, dhcpConfig(true))
	c := p.NewChecker()
	expect := func(name string, frame []byte, port uint32, now int64, want Reason) {
		t.Helper()
		if r := c.FromClient(frame, port, now); r != want {
			t.Errorf("%s: %v, want %v (%s)", name, r, want, c.Describe())
		}
	}
	expect("link-local", echo6Frame(macA, llA, tap6), portA, 1, Pass)
	expect("link-local of another", echo6Frame(macB, llA, tap6), portB, 1, IPBindingConflict)
	expect("global before a lease", udp6Frame(macA, ip6A, tap6), portA, 1, IPNotLeased)
	expect("NA for a global address before a lease", naFrame(macA, llA, ip6A, llOpt(layers.ICMPv6OptTargetAddress, macA)), portA, 1, IPNotLeased)

	snoop6(t, p, dhcp6ReplyFrame(macA, 60, ip6A), portA, 10*sec)
	expect("leased global", udp6Frame(macA, ip6A, tap6), portA, 11*sec, Pass)
	snoop(t, p, nakFrame(macA), 0, 11*sec)
	expect("leased global after a DHCPv4 NAK", udp6Frame(macA, ip6A, tap6), portA, 11*sec, Pass)
	expect("NA for the leased address", naFrame(macA, llA, ip6A, llOpt(layers.ICMPv6OptTargetAddress, macA)), portA, 11*sec, Pass)
	expect("another global", udp6Frame(macA, "2001:db8::b", tap6), portA, 11*sec, IPNotLeased)
	expect("the lease from B", udp6Frame(macB, ip6A, tap6), portB, 11*sec, IPNotLeased)
	expect("lease ended", udp6Frame(macA, ip6A, tap6), portA, 70*sec, IPNotLeased)

	// Renewed, then released by the client from its link-local address.
	snoop6(t, p, dhcp6ReplyFrame(macA, 60, ip6A), portA, 70*sec)
	expect("renewed", udp6Frame(macA, ip6A, tap6), portA, 71*sec, Pass)
	expect("release from B naming A's address", dhcp6ClientFrame(macB, "fe80::b", dhcp6Release, ip6A), portB, 71*sec, Pass)
	expect("still A's", udp6Frame(macA, ip6A, tap6), portA, 71*sec, Pass)
	expect("release", dhcp6ClientFrame(macA, llA, dhcp6Release, ip6A), portA, 72*sec, Pass)
	expect("after the release", udp6Frame(macA, ip6A, tap6), portA, 72*sec, IPNotLeased)

	// A lifetime of 0 withdraws; addresses outside the prefix, link-local
	// and the TAP's lease nothing.
	snoop6(t, p, dhcp6ReplyFrame(macA, 60, ip6A), portA, 80*sec)
	snoop6(t, p, dhcp6ReplyFrame(macA, 0, ip6A), portA, 81*sec)
	expect("withdrawn", udp6Frame(macA, ip6A, tap6), portA, 82*sec, IPNotLeased)
	if snoop6(t, p, dhcp6ReplyFrame(macA, 60, "2001:db9::a", "fe80::77", tap6), portA, 83*sec) || p.NumLeases() != 0 {
		t.Errorf("leased an address no client may use: %d leases", p.NumLeases())
	}
}

func snoop6(t *testing.T, p *Policy, frame []byte, port uint32, now int64) bool {
	t.Helper()
	m, ok := ParseDHCPv6Reply(frame)
	if !ok {
		t.Fatalf("not a DHCPv6 reply: % x", frame)
	}
	return p.SnoopReply6(&m, port, now)
}

// TestLeaseTableChurn: leases come and go in every order with the table
// keeping each one findable (backward-shift deletion).
func TestLeaseTableChurn(t *testing.T) {
	tab := newLeaseTable(64)
	held := map[uint32]bool{}
	x := uint32(1)
	for i := 0; i < 20000; i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		a := uint32(198<<24 | 18<<16 | x%100)
		k := key4(a)
		if x&4 != 0 {
			if j := tab.find(&k); j >= 0 {
				tab.remove(uint32(j))
			}
			delete(held, a)
		} else if tab.put(&k, macA, portA, 1) {
			held[a] = true
		}
		if tab.count != len(held) {
			t.Fatalf("step %d: count %d, want %d", i, tab.count, len(held))
		}
	}
	for a := range held {
		if k := key4(a); tab.find(&k) < 0 {
			t.Fatalf("lease of %#x lost", a)
		}
	}
	if k := key4(198<<24 | 18<<16 | 200); tab.find(&k) >= 0 {
		t.Fatal("found an address never leased")
	}
}

func TestLeaseZeroAllocs(t *testing.T) {
	p := newTestPolicy(t, dhcpConfig(false))
	c := p.NewChecker()
	ack, nak, tcp := ackFrame(macA, ipA, 60), nakFrame(macB), tcpFrame(tapMAC, tapIP, ipA)
	leased, other := tcpFrame(macA, ipA, tapIP), tcpFrame(macA, ipB, tapIP)
	now := int64(sec)
	assertNoAllocs(t, "ParseDHCPReply+SnoopReply ACK", func() {
		m, ok := ParseDHCPReply(ack)
		if !ok || !p.SnoopReply(&m, portA, now) {
			t.Fatal("ACK not taken")
		}
	})
	assertNoAllocs(t, "ParseDHCPReply+SnoopReply NAK", func() {
		m, _ := ParseDHCPReply(nak)
		p.SnoopReply(&m, 0, now)
	})
	assertNoAllocs(t, "ParseDHCPReply TCP", func() {
		if _, ok := ParseDHCPReply(tcp); ok {
			t.Fatal("TCP parsed")
		}
	})
	assertNoAllocs(t, "leased address", func() {
		now++
		if c.FromClient(leased, portA, now) != Pass || c.ToTap() != Pass {
			t.Fatal("leased address dropped")
		}
	})
	assertNoAllocs(t, "unleased address", func() {
		if c.FromClient(other, portA, now) != IPNotLeased {
			t.Fatal("unleased address passed")
		}
	})
	p6 := newTestPolicy(t, dhcpConfig(true))
	c6 := p6.NewChecker()
	reply6, leased6, release6 := dhcp6ReplyFrame(macA, 60, ip6A), udp6Frame(macA, ip6A, tap6), dhcp6ClientFrame(macA, llA, dhcp6Release, ip6A)
	assertNoAllocs(t, "DHCPv6 reply, leased frame, release", func() {
		m, ok := ParseDHCPv6Reply(reply6)
		if !ok || !p6.SnoopReply6(&m, portA, now) {
			t.Fatal("DHCPv6 reply not taken")
		}
		if c6.FromClient(leased6, portA, now) != Pass || c6.FromClient(release6, portA, now) != Pass || p6.NumLeases() != 0 {
			t.Fatal("leased IPv6 frame or release dropped")
		}
	})
	rel := releaseFrame(macA, macA, ipA)
	assertNoAllocs(t, "release, lease, Expire", func() {
		c.FromClient(rel, portA, now)
		m, _ := ParseDHCPReply(ack)
		p.SnoopReply(&m, portA, now)
		p.Expire(now)
	})
}

// FuzzFromClientLeased: under --ip-source dhcp, with A leased ipA and
// ip6A, whatever A sends, nothing it passes has an IPv4 source or a global
// IPv6 source other than those (0.0.0.0 and link-local aside), and the
// checker does not panic. The seeds are the rule table's frames.
func FuzzFromClientLeased(f *testing.F) {
	for _, tc := range ruleCases() {
		f.Add(tc.frame)
	}
	f.Add(releaseFrame(macA, macA, ipA))
	f.Add(dhcp6ClientFrame(macA, llA, dhcp6Release, ip6A))
	f.Fuzz(func(t *testing.T, frame []byte) {
		p := newTestPolicy(t, dhcpConfig(true))
		snoop(t, p, ackFrame(macA, ipA, 60), portA, 0)
		snoop6(t, p, dhcp6ReplyFrame(macA, 60, ip6A), portA, 0)
		c := p.NewChecker()
		if c.FromClient(frame, portA, 1) != Pass || len(frame) < 14+40 {
			return
		}
		switch binary.BigEndian.Uint16(frame[12:14]) {
		case 0x0800:
			src := netip.AddrFrom4([4]byte(frame[14+12 : 14+16]))
			if src != netip.MustParseAddr(ipA) && !src.IsUnspecified() {
				t.Fatalf("passed IPv4 from %v", src)
			}
		case 0x86dd:
			src := netip.AddrFrom16([16]byte(frame[14+8 : 14+24]))
			if src != netip.MustParseAddr(ip6A) && !src.IsLinkLocalUnicast() && !src.IsUnspecified() {
				t.Fatalf("passed IPv6 from %v", src)
			}
		}
	})
}
