package engine

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/testbed"
	"github.com/vknetd/vknetd/mactable"
	"github.com/vknetd/vknetd/secure"
)

// tenantPolicy is --ip-source dhcp with --ipv6, --user-ips 2 and
// --user-net 4242=198.18.9.0/24: every kind of binding issue 21 made.
func tenantPolicy(t *testing.T, c *Config) {
	t.Helper()
	p, err := secure.New(secure.Config{Secure: true, Network: netip.MustParsePrefix("198.18.0.1/16"),
		IPv6: netip.MustParsePrefix("2001:db8::1/64"), TapMAC: mac(0xfe), MaxBindings: 1024, PortBindings: 8,
		MaxPorts: MaxPorts(c.MaxClients), UserBindings: 2, BindingAge: time.Minute, IPSource: secure.IPSourceDHCP,
		UserNets: []secure.UserNet{{UID: 4242, Prefix: netip.MustParsePrefix("198.18.9.0/24"), Given: "4242=198.18.9.0/24"}}})
	if err != nil {
		t.Fatal(err)
	}
	c.Policy = p
}

// dhcpRelease is chaddr's DHCPRELEASE of ciaddr, sent from it to the host.
func dhcpRelease(chaddr [6]byte, ciaddr [4]byte) []byte {
	b := bootp(1, chaddr, [4]byte{}, 53, 1, 7, 54, 4, 198, 18, 0, 1, 255)
	copy(b[12:16], ciaddr[:])
	return testbed.IPv4UDP(chaddr, mac(0xfe), netip.AddrFrom4(ciaddr), hostIP, 68, 67, b)
}

// heldBinding is a binding as the test compares it across a handover: its
// end as a wall-clock time, each switch's clock having its own origin.
type heldBinding struct {
	mac    [6]byte
	port   uint32
	source secure.Source
	ends   time.Time // zero: with its port
}

func heldBindings(e *Engine) map[netip.Addr]heldBinding {
	m := map[netip.Addr]heldBinding{}
	e.policy.Bindings(func(b secure.Binding) {
		h := heldBinding{mac: b.MAC, port: b.Port, source: b.Source}
		if b.Expires != 0 {
			h.ends = e.start.Add(time.Duration(b.Expires))
		}
		m[b.IP] = h
	})
	return m
}

// Issue 21's "bindings survive an upgrade": leases (their MAC, port and
// end), a static --user-net address (range) and first-use bindings (IPv6
// link-local) are the same after Freeze and Adopt, a user at its
// --user-ips is still at it, a renewal, a DHCPRELEASE and a lease's end
// after the upgrade do what they did before, and another user still
// cannot use the --user-net range.
func TestAdoptKeepsLeasesRangesAndUserLimits(t *testing.T) {
	forWorkers(t, testAdoptKeepsLeasesRangesAndUserLimits)
}

func testAdoptKeepsLeasesRangesAndUserLimits(t *testing.T, workers int) {
	var host int
	s := newTestSwitch(t, true, mactable.Config{}, func(c *Config) {
		withWorkers(workers)(c)
		host = withTap(t, c)
		tenantPolicy(t, c)
	})
	const ranged, leased = 4242, 4343
	a := s.connectAs(ranged)
	b1, b2 := s.connectAs(leased), s.connectAs(leased)
	macA, mac1, mac2 := mac(0xa1), mac(0xb1), mac(0xb2)
	static, lease1, lease2 := [4]byte{198, 18, 9, 5}, [4]byte{198, 18, 0, 50}, [4]byte{198, 18, 0, 51}
	ll := func(m [6]byte, src string) []byte { return udp6(mac(0xfe), m, src, "fe80::1", 4000, 5000, []byte("x")) }
	// sent passes frame from c and reports whether the host got it.
	sent := func(sw *testSwitch, c *testClient, frame []byte) bool {
		t.Helper()
		c.send(t, frame)
		sw.pump()
		got := drainFrames(t, host)
		return len(got) == 1
	}
	drainAll := func(cs ...*testClient) {
		for _, c := range cs {
			drainFrames(t, c.fd)
		}
	}

	// A uses its static address; each of B's clients takes a lease and
	// its link-local address, which fills user B's --user-ips 2.
	if !sent(s, a, toHost(macA, static)) {
		t.Fatal("A's static --user-net address did not pass")
	}
	for _, c := range []struct {
		cl    *testClient
		mac   [6]byte
		lease [4]byte
		secs  uint32
		ll    string
	}{{b1, mac1, lease1, 600, "fe80::b1"}, {b2, mac2, lease2, 20, "fe80::b2"}} {
		sent(s, c.cl, dhcpDiscover(c.mac))
		drainAll(a, b1, b2)
		writeFrame(t, host, dhcpAck(broadcast, c.mac, c.lease, c.secs))
		s.pump()
		drainAll(a, b1, b2)
		if !sent(s, c.cl, toHost(c.mac, c.lease)) || !sent(s, c.cl, ll(c.mac, c.ll)) {
			t.Fatalf("%v's leased or link-local address did not pass", c.lease)
		}
	}
	if sent(s, b2, ll(mac2, "fe80::b3")) || b2.port.cnt.secureDrops[secure.UserBindingLimit] != 1 {
		t.Fatal("user B's third first-use address was not refused at --user-ips 2")
	}
	before := heldBindings(s.e)
	want := map[netip.Addr]secure.Source{netip.AddrFrom4(static): secure.Range, netip.AddrFrom4(lease1): secure.Lease,
		netip.AddrFrom4(lease2): secure.Lease, netip.MustParseAddr("fe80::b1"): secure.FirstUse, netip.MustParseAddr("fe80::b2"): secure.FirstUse}
	if len(before) != len(want) {
		t.Fatalf("bindings before the upgrade: %v", before)
	}

	tapFd := s.e.cfg.TapFd
	handed := time.Now()
	n := handOverWith(t, s, func(c *Config) {
		fd, err := unix.Dup(tapFd)
		if err != nil {
			t.Fatal(err)
		}
		c.TapFd, c.TapName = fd, "tap-test"
		tenantPolicy(t, c)
	})
	took := time.Since(handed)
	after := heldBindings(n.e)
	for ip, src := range want {
		b, h := before[ip], after[ip]
		if h.source != src || b.source != src || h.mac != b.mac || h.port != b.port {
			t.Errorf("%v: before %+v, after %+v; want source %v, the same MAC and port", ip, b, h, src)
		}
		// The new end is the old one moved by the time the handover took.
		if d := h.ends.Sub(b.ends); b.ends.IsZero() || h.ends.IsZero() || d < -time.Millisecond || d > took+time.Millisecond {
			t.Errorf("%v ends %v after the upgrade, %v before: want the same end within %v", ip, h.ends, b.ends, took)
		}
	}
	if len(after) != len(want) {
		t.Errorf("bindings after the upgrade: %v, want %d", after, len(want))
	}
	adopted := func(c *testClient) *testClient { return &testClient{fd: c.fd, port: n.e.ports.get(c.port.id)} }
	a, b1, b2 = adopted(a), adopted(b1), adopted(b2)

	// Every binding still passes; user B is still at its --user-ips;
	// nobody else may use A's range.
	for _, c := range []struct {
		cl    *testClient
		frame []byte
	}{{a, toHost(macA, static)}, {b1, toHost(mac1, lease1)}, {b2, toHost(mac2, lease2)},
		{b1, ll(mac1, "fe80::b1")}, {b2, ll(mac2, "fe80::b2")}} {
		if !sent(n, c.cl, c.frame) {
			t.Fatalf("port %d: a bound address refused after the upgrade (drops %v)", c.cl.port.id, c.cl.port.cnt.secureDrops)
		}
	}
	if sent(n, b1, ll(mac1, "fe80::b3")) || b1.port.cnt.secureDrops[secure.UserBindingLimit] != 1 {
		t.Fatal("after the upgrade user B binds a third first-use address over its --user-ips 2")
	}
	if sent(n, b1, toHost(mac1, [4]byte{198, 18, 9, 6})) {
		t.Fatal("after the upgrade user B uses an address of user A's --user-net")
	}

	// A renewal moves the lease's end; a DHCPRELEASE ends it.
	writeFrame(t, host, dhcpAck(broadcast, mac1, lease1, 3600))
	n.pump()
	drainAll(a, b1, b2)
	if h := heldBindings(n.e)[netip.AddrFrom4(lease1)]; h.ends.Sub(time.Now()) < 3590*time.Second {
		t.Fatalf("renewed for 3600 s after the upgrade, the lease ends in %v", h.ends.Sub(time.Now()))
	}
	sent(n, b1, dhcpRelease(mac1, lease1))
	if sent(n, b1, toHost(mac1, lease1)) {
		t.Fatal("a lease released after the upgrade still passes")
	}
	// B2's 20 s lease runs out on the adopted clock.
	n.advance(after[netip.AddrFrom4(lease2)].ends.Sub(n.clockNow()) + time.Millisecond)
	n.l.sweep()
	if sent(n, b2, toHost(mac2, lease2)) {
		t.Fatal("a lease whose time ran out after the upgrade still passes")
	}
	if _, ok := heldBindings(n.e)[netip.AddrFrom4(lease2)]; ok || n.e.policy.NumLeases() != 0 {
		t.Fatalf("%d leases left after the release and the end", n.e.policy.NumLeases())
	}
	if d := b1.port.cnt.secureDrops[secure.IPNotLeased] + b2.port.cnt.secureDrops[secure.IPNotLeased]; d != 3 {
		t.Fatalf("ip-not-leased drops after the upgrade %d, want 3 (A's range, the released lease, the ended one)", d)
	}
}
