package secure

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
)

func TestBindingFirstClaimerKeepsAddress(t *testing.T) {
	p := newTestPolicy(t, testConfig(false))
	c := p.NewChecker()
	if r := c.FromClient(tcpFrame(macA, ipA, tapIP), portA, 1); r != Pass {
		t.Fatalf("A's first frame: %v", r)
	}
	for i := 0; i < 3; i++ {
		if r := c.FromClient(tcpFrame(macB, ipA, tapIP), portB, 2); r != IPBindingConflict {
			t.Fatalf("B using A's address: %v, want %v", r, IPBindingConflict)
		}
		if r := c.FromClient(arpFrame(macB, layers.ARPReply, macB, ipA, tapIP), portB, 2); r != IPBindingConflict {
			t.Fatalf("B's ARP for A's address: %v, want %v", r, IPBindingConflict)
		}
		if r := c.FromClient(icmpFrame(macA, ipA, tapIP), portA, 3); r != Pass {
			t.Fatalf("A keeps its address: %v", r)
		}
	}
	want := map[netip.Addr]struct {
		mac  [6]byte
		port uint32
	}{netip.MustParseAddr(ipA): {macA, portA}}
	got := listBindings(p)
	if len(got) != 1 || got[netip.MustParseAddr(ipA)] != want[netip.MustParseAddr(ipA)] {
		t.Fatalf("Bindings = %v, want %v", got, want)
	}
}

type bound struct {
	mac  [6]byte
	port uint32
}

func listBindings(p *Policy) map[netip.Addr]bound {
	m := map[netip.Addr]bound{}
	p.Bindings(func(b Binding) { m[b.IP] = bound{b.MAC, b.Port} })
	return m
}

func TestDroppedFrameBindsNothing(t *testing.T) {
	p := newTestPolicy(t, testConfig(true))
	c := p.NewChecker()
	// Source and target both free, but the target link-layer address lies:
	// neither address may be bound.
	if r := c.FromClient(naFrame(macB, "fe80::b", ip6A, llOpt(layers.ICMPv6OptTargetAddress, macA)), portB, 1); r != NDTargetMismatch {
		t.Fatalf("lying NA: %v", r)
	}
	if r := c.FromClient(tcpFrame(macB, ipA, tapIP)[:40], portB, 1); r != Truncated {
		t.Fatalf("truncated frame: %v", r)
	}
	if n := p.NumBindings(); n != 0 {
		t.Fatalf("dropped frames bound %d addresses: %v", n, listBindings(p))
	}
	if r := c.FromClient(udp6Frame(macA, ip6A, tap6), portA, 2); r != Pass {
		t.Fatalf("A's address was taken by a dropped frame: %v", r)
	}
}

func TestBindingReleasedOnRemovePort(t *testing.T) {
	p := newTestPolicy(t, testConfig(true))
	c := p.NewChecker()
	for _, f := range [][]byte{tcpFrame(macA, ipA, tapIP), udp6Frame(macA, ip6A, tap6), echo6Frame(macA, llA, tap6)} {
		if r := c.FromClient(f, portA, 1); r != Pass {
			t.Fatalf("A: %v (%s)", r, c.Describe())
		}
	}
	if r := c.FromClient(tcpFrame(macB, ipB, tapIP), portB, 1); r != Pass {
		t.Fatalf("B: %v", r)
	}
	p.RemovePort(portA)
	got := listBindings(p)
	if len(got) != 1 || got[netip.MustParseAddr(ipB)] != (bound{macB, portB}) {
		t.Fatalf("after RemovePort(A): %v, want only B's", got)
	}
	if r := c.FromClient(tcpFrame(macB, ipA, tapIP), portB, 2); r != Pass {
		t.Fatalf("B taking A's released address: %v", r)
	}
}

func TestBindingReleasedOnExpire(t *testing.T) {
	cfg := testConfig(false)
	cfg.BindingAge = time.Minute
	p := newTestPolicy(t, cfg)
	c := p.NewChecker()
	min := int64(time.Minute)
	if r := c.FromClient(tcpFrame(macA, ipA, tapIP), portA, 0); r != Pass {
		t.Fatal(r)
	}
	if r := c.FromClient(tcpFrame(macB, ipB, tapIP), portB, 0); r != Pass {
		t.Fatal(r)
	}
	// A keeps using its address; B goes quiet.
	if r := c.FromClient(tcpFrame(macA, ipA, tapIP), portA, min/2); r != Pass {
		t.Fatal(r)
	}
	if n := p.Expire(min); n != 0 {
		t.Fatalf("Expire at exactly the age released %d", n)
	}
	if n := p.Expire(min + 1); n != 1 {
		t.Fatalf("Expire released %d, want 1 (B's)", n)
	}
	if got := listBindings(p); len(got) != 1 || got[netip.MustParseAddr(ipA)] != (bound{macA, portA}) {
		t.Fatalf("after Expire: %v", got)
	}
	if r := c.FromClient(tcpFrame(macA, ipB, tapIP), portA, min+2); r != Pass {
		t.Fatalf("A taking B's expired address: %v", r)
	}
	if n := p.Expire(min/2 + min + 1); n != 1 {
		t.Fatalf("Expire released %d, want 1 (A's first address)", n)
	}
}

func TestBindingAgeZeroNeverExpires(t *testing.T) {
	cfg := testConfig(false)
	cfg.BindingAge = 0
	p := newTestPolicy(t, cfg)
	c := p.NewChecker()
	if r := c.FromClient(tcpFrame(macA, ipA, tapIP), portA, 0); r != Pass {
		t.Fatal(r)
	}
	if n := p.Expire(1 << 62); n != 0 || p.NumBindings() != 1 {
		t.Fatalf("Expire with no aging released %d", n)
	}
}

func TestTapAddressNeverClaimable(t *testing.T) {
	p := newTestPolicy(t, testConfig(true))
	c := p.NewChecker()
	frames := [][]byte{
		icmpFrame(macA, tapIP, ipB),
		arpFrame(macA, layers.ARPReply, macA, tapIP, ipB),
		arpFrame(macA, layers.ARPRequest, macA, tapIP, tapIP), // gratuitous
		echo6Frame(macA, tap6, ip6A),
		echo6Frame(macA, tapLL6, llA),
		naFrame(macA, llA, tap6, llOpt(layers.ICMPv6OptTargetAddress, macA)),
		naFrame(macA, llA, tapLL6, llOpt(layers.ICMPv6OptTargetAddress, macA)),
	}
	for round := 0; round < 2; round++ {
		for i, f := range frames {
			if r := c.FromClient(f, portA, int64(round)); r != TapAddrClaimed {
				t.Fatalf("round %d frame %d: %v, want %v (%s)", round, i, r, TapAddrClaimed, c.Describe())
			}
		}
		// Neither aging nor a disconnect frees the TAP's addresses.
		p.Expire(1 << 62)
		p.RemovePort(portA)
	}
	if n := p.NumBindings(); n != 0 {
		t.Fatalf("TAP claims left %d bindings", n)
	}
}

func TestBindingTableFull(t *testing.T) {
	cfg := testConfig(true)
	cfg.MaxBindings = 2
	p := newTestPolicy(t, cfg)
	c := p.NewChecker()
	if r := c.FromClient(tcpFrame(macA, ipA, tapIP), portA, 1); r != Pass {
		t.Fatal(r)
	}
	// An NA from a new source for a new target needs two free entries.
	if r := c.FromClient(naFrame(macB, "fe80::b", "fe80::c", llOpt(layers.ICMPv6OptTargetAddress, macB)), portB, 1); r != BindingTableFull {
		t.Fatalf("two new addresses into one free entry: %v, want %v", r, BindingTableFull)
	}
	if r := c.FromClient(tcpFrame(macB, ipB, tapIP), portB, 1); r != Pass {
		t.Fatalf("filling the last entry: %v", r)
	}
	if r := c.FromClient(tcpFrame(macB, "198.18.0.12", tapIP), portB, 1); r != BindingTableFull {
		t.Fatalf("new address into a full table: %v, want %v", r, BindingTableFull)
	}
	if r := c.FromClient(tcpFrame(macA, ipA, tapIP), portA, 2); r != Pass {
		t.Fatalf("bound address with a full table: %v", r)
	}
	if r := c.FromClient(dhcp(), portB, 2); r != Pass {
		t.Fatalf("DHCP with a full table: %v", r)
	}
	p.RemovePort(portB)
	if r := c.FromClient(tcpFrame(macB, "198.18.0.12", tapIP), portB, 3); r != Pass {
		t.Fatalf("after a release: %v", r)
	}
}

func dhcp() []byte { return dhcpFrame(macB, macB, "0.0.0.0", layers.DHCPMsgTypeDiscover, nil) }

// TestBindTableModel drives the open-addressing table with random inserts,
// refreshes and removals and compares it with a map after every step: the
// backward-shift deletion must never lose or duplicate a key.
func TestBindTableModel(t *testing.T) {
	const max = 100
	tab := newBindTable(max, 0, 0, 0)
	model := map[bindKey]uint32{}
	rng := rand.New(rand.NewPCG(1, 2))
	key := func() bindKey {
		// A small key space makes collisions and long probe runs common.
		return bindKey(netip.AddrFrom4([4]byte{198, 18, 0, byte(rng.IntN(150))}).As16())
	}
	for step := 0; step < 20000; step++ {
		k := key()
		switch op := rng.IntN(10); {
		case op < 6:
			if _, ok := model[k]; ok {
				continue
			}
			if len(model) == max {
				continue
			}
			port := uint32(rng.IntN(4))
			tab.insert(&k, [6]byte{1}, port, 0, FirstUse, int64(step))
			model[k] = port
		case op < 8:
			i := tab.find(&k)
			_, ok := model[k]
			if ok != (i >= 0) {
				t.Fatalf("step %d: find(%v) = %d, model has it: %v", step, k, i, ok)
			}
			if ok {
				tab.remove(uint32(i))
				delete(model, k)
			}
		default:
			port := uint32(rng.IntN(4))
			n := tab.removeIf(func(b *binding) bool { return b.port == port })
			want := 0
			for mk, p := range model {
				if p == port {
					delete(model, mk)
					want++
				}
			}
			if n != want {
				t.Fatalf("step %d: removeIf(port %d) removed %d, want %d", step, port, n, want)
			}
		}
		if tab.count != len(model) {
			t.Fatalf("step %d: count %d, model %d", step, tab.count, len(model))
		}
		for mk, port := range model {
			i := tab.find(&mk)
			if i < 0 || tab.slots[i].port != port {
				t.Fatalf("step %d: key %v lost or wrong (slot %d)", step, mk, i)
			}
		}
	}
}

func TestNewErrors(t *testing.T) {
	base := testConfig(false)
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no CIDR", func(c *Config) { c.Network = netip.Prefix{} }, "address/cidrbits"},
		{"IPv6 CIDR", func(c *Config) { c.Network = netip.MustParsePrefix("2001:db8::1/64") }, "needs an IPv4"},
		{"/0", func(c *Config) { c.Network = netip.MustParsePrefix("198.18.0.1/0") }, "/0"},
		{"no TAP MAC", func(c *Config) { c.TapMAC = [6]byte{} }, "TapMAC"},
		{"negative age", func(c *Config) { c.BindingAge = -time.Second }, "--mac-age"},
		{"negative table", func(c *Config) { c.MaxBindings = -1 }, "--mac-max -1"},
		{"huge table", func(c *Config) { c.MaxBindings = maxBindingsLimit + 1 }, "--mac-max"},
		{"--ipv6 with IPv4", func(c *Config) { c.IPv6 = netip.MustParsePrefix("198.18.0.1/16") }, "--ipv6 198.18.0.1/16"},
		{"--ipv6 /0", func(c *Config) { c.IPv6 = netip.MustParsePrefix("::/0") }, "--ipv6 ::/0"},
		{"--ipv6 covering mapped", func(c *Config) { c.IPv6 = netip.MustParsePrefix("::/64") }, "--ipv6 ::/64"},
		{"--ipv6 multicast", func(c *Config) { c.IPv6 = netip.MustParsePrefix("ff02::/16") }, "--ipv6 ff02::/16"},
		{"--ipv6 link-local", func(c *Config) { c.IPv6 = netip.MustParsePrefix("fe80::1/64") }, "--ipv6 fe80::1/64"},
	}
	for _, tc := range cases {
		cfg := base
		tc.edit(&cfg)
		_, err := New(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New error %v, want one naming %q", tc.name, err, tc.want)
		}
	}
	cfg := base
	cfg.MaxBindings = 0
	p, err := New(cfg)
	if err != nil || p.table.max != DefaultMaxBindings {
		t.Errorf("MaxBindings 0: %v, max %d, want %d", err, p.table.max, DefaultMaxBindings)
	}
	if _, err := New(Config{}); err != nil {
		t.Errorf("-U needs no configuration: %v", err)
	}
}

func TestSmallPrefixes(t *testing.T) {
	for _, tc := range []struct {
		cidr, src string
		want      Reason
	}{
		{"198.18.0.1/31", "198.18.0.0", Pass}, // RFC 3021: both addresses are hosts
		{"198.18.0.1/30", "198.18.0.2", Pass},
		{"198.18.0.1/30", "198.18.0.3", IPv4SrcOutside},
		{"198.18.0.1/32", "198.18.0.2", IPv4SrcOutside},
	} {
		cfg := testConfig(false)
		cfg.Network = netip.MustParsePrefix(tc.cidr)
		c := newTestPolicy(t, cfg).NewChecker()
		if r := c.FromClient(icmpFrame(macA, tc.src, "198.18.0.1"), portA, 1); r != tc.want {
			t.Errorf("%s from %s: %v, want %v", tc.cidr, tc.src, r, tc.want)
		}
	}
}

// TestGuestBootSequence replays what a guest sends while it boots, gets a
// lease and comes up on IPv4 and IPv6: every frame must pass, to other
// clients and to the TAP. A second guest then cannot take its addresses
// until the first disconnects.
func TestGuestBootSequence(t *testing.T) {
	p := newTestPolicy(t, testConfig(true))
	c := p.NewChecker()
	boot := []struct {
		name  string
		frame []byte
	}{
		{"DHCP discover", dhcpFrame(macA, macA, "0.0.0.0", layers.DHCPMsgTypeDiscover, &macA)},
		{"DHCP request", dhcpFrame(macA, macA, "0.0.0.0", layers.DHCPMsgTypeRequest, &macA)},
		{"ARP probe", arpFrame(macA, layers.ARPRequest, macA, "0.0.0.0", ipA)},
		{"ARP announcement", arpFrame(macA, layers.ARPRequest, macA, ipA, ipA)},
		{"ARP for the gateway", arpFrame(macA, layers.ARPRequest, macA, ipA, tapIP)},
		{"ping the TAP", icmpFrame(macA, ipA, tapIP)},
		{"TCP to the TAP", tcpFrame(macA, ipA, tapIP)},
		{"MLDv2 report before an address", ext6Frame(macA, "::", "ff02::16", layers.IPProtocolIPv6HopByHop,
			hopByHopRouterAlert(layers.IPProtocolICMPv6), mld2Report())},
		{"DAD for the link-local address", nsFrame(macA, "::", llA)},
		{"router solicitation", rsFrame(macA, llA, llOpt(layers.ICMPv6OptSourceAddress, macA))},
		{"unsolicited NA", naFrame(macA, llA, llA, llOpt(layers.ICMPv6OptTargetAddress, macA))},
		{"DAD for the global address", nsFrame(macA, "::", ip6A)},
		{"NA for the global address", naFrame(macA, llA, ip6A, llOpt(layers.ICMPv6OptTargetAddress, macA))},
		{"UDP over IPv6 to the TAP", udp6Frame(macA, ip6A, tap6)},
	}
	for i, f := range boot {
		if r := c.FromClient(f.frame, portA, int64(i)); r != Pass {
			t.Fatalf("%s: FromClient %v (%s)", f.name, r, c.Describe())
		}
		if r := c.ToTap(); r != Pass {
			t.Fatalf("%s: ToTap %v (%s)", f.name, r, c.Describe())
		}
	}
	if got := listBindings(p); len(got) != 3 {
		t.Fatalf("bindings after boot: %v, want %s, %s, %s", got, ipA, llA, ip6A)
	}
	steal := [][]byte{
		arpFrame(macB, layers.ARPReply, macB, ipA, tapIP),
		icmpFrame(macB, ipA, tapIP),
		naFrame(macB, "fe80::b", llA, llOpt(layers.ICMPv6OptTargetAddress, macB)),
		udp6Frame(macB, ip6A, tap6),
	}
	for i, f := range steal {
		if r := c.FromClient(f, portB, 100); r != IPBindingConflict {
			t.Fatalf("steal %d: %v, want %v (%s)", i, r, IPBindingConflict, c.Describe())
		}
	}
	p.RemovePort(portA)
	for i, f := range steal {
		if r := c.FromClient(f, portB, 101); r != Pass {
			t.Fatalf("after A left, frame %d: %v (%s)", i, r, c.Describe())
		}
	}
}

// TestPortBindingLimit: one client cannot hold more than PortBindings
// addresses, so it cannot fill the table and lock later clients out; its
// count goes down as its bindings are released.
func TestPortBindingLimit(t *testing.T) {
	cfg := testConfig(false)
	cfg.PortBindings = 2
	p := newTestPolicy(t, cfg)
	c := p.NewChecker()
	for i, a := range []string{ipA, "198.18.0.12"} {
		if r := c.FromClient(tcpFrame(macA, a, tapIP), portA, int64(i)); r != Pass {
			t.Fatalf("address %d of 2: %v", i+1, r)
		}
	}
	if r := c.FromClient(tcpFrame(macA, "198.18.0.13", tapIP), portA, 3); r != PortBindingLimit {
		t.Fatalf("third address: %v, want %v", r, PortBindingLimit)
	}
	if r := c.FromClient(tcpFrame(macA, ipA, tapIP), portA, 4); r != Pass {
		t.Fatalf("a bound address at the limit: %v", r)
	}
	if r := c.FromClient(tcpFrame(macB, ipB, tapIP), portB, 4); r != Pass {
		t.Fatalf("another client beside a full one: %v", r)
	}
	// Expire releases "198.18.0.12" (last used at 1) but not ipA (used at 4).
	p.age = 2
	p.Expire(4)
	if r := c.FromClient(tcpFrame(macA, "198.18.0.13", tapIP), portA, 5); r != Pass {
		t.Fatalf("after one binding expired: %v", r)
	}
	p.RemovePort(portA)
	if n := p.table.perPort[portA]; n != 0 {
		t.Fatalf("port A still counts %d bindings after RemovePort", n)
	}
	if n := p.table.perPort[portB]; n != 1 {
		t.Fatalf("port B counts %d bindings, want 1", n)
	}
}

// TestKey4IsTheMappedAddress: an IPv4 claim's key, built as two words, is
// the address's IPv4-mapped IPv6 form, byte for byte, and an IPv4 or ARP
// frame queues exactly that one claim.
func TestKey4IsTheMappedAddress(t *testing.T) {
	for i := 0; i < 1000; i++ {
		a := rand.Uint32()
		if i == 0 {
			a = 0xc6120001 // 198.18.0.1
		}
		want := netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}).As16()
		if got := key4(a); got != want {
			t.Fatalf("key4(%#x) = %x, want %x", a, got, want)
		}
	}
	p := newTestPolicy(t, testConfig(false))
	c := p.NewChecker()
	want := bindKey(netip.MustParseAddr(ipA).As16())
	for _, f := range [][]byte{tcpFrame(macA, ipA, tapIP), arpFrame(macA, layers.ARPReply, macA, ipA, ipA)} {
		if r := c.Check(f, portA); r != Pass {
			t.Fatalf("%s: %v", c.Describe(), r)
		}
		if c.nclaims != 1 || c.claims[0] != want {
			t.Fatalf("%s: claims %x (%d), want one %x", c.Describe(), c.claims, c.nclaims, want)
		}
	}
}

// TestIPv4ChecksumOKAgreesWithRFC1071: the checksum test, with its
// unrolled path for 20-byte headers and its loop for longer ones, agrees
// with a plain sum of 16-bit words, on headers whose checksum is right,
// off by one bit, or random.
func TestIPv4ChecksumOKAgreesWithRFC1071(t *testing.T) {
	ref := func(h []byte) bool {
		var sum uint32
		for i := 0; i < len(h); i += 2 {
			sum += uint32(h[i])<<8 | uint32(h[i+1])
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		return sum == 0xffff
	}
	f := make([]byte, 14+60)
	for i := 0; i < 20000; i++ {
		hlen := 20 + 4*(i%11)
		if i%3 == 0 {
			hlen = 20
		}
		h := f[14 : 14+hlen]
		for j := range h {
			h[j] = byte(rand.Uint32())
		}
		if i%7 == 0 {
			clear(h) // the sum 0, which no header can have
		}
		h[0] = 0x40 | byte(hlen/4)
		switch i % 4 {
		case 0, 1:
			fixIPv4Checksum(f)
		case 2:
			fixIPv4Checksum(f)
			h[rand.IntN(hlen)] ^= 1 << rand.IntN(8)
		}
		if got, want := ipv4ChecksumOK(h), ref(h); got != want {
			t.Fatalf("ipv4ChecksumOK(%x) = %v, want %v", h, got, want)
		}
	}
}

// TestSlotHintNeverPassesAnotherClientsBinding: a port's slot hint is a
// guess that is checked. After A's address went to B, A's hint points at
// B's binding of the same address, and a port that shares A's hint entry
// (port numbers slotHints apart) finds A's binding there: neither passes.
func TestSlotHintNeverPassesAnotherClientsBinding(t *testing.T) {
	p := newTestPolicy(t, testConfig(false))
	c := p.NewChecker()
	if r := c.FromClient(tcpFrame(macA, ipA, tapIP), portA, 1); r != Pass {
		t.Fatalf("A's first frame: %v", r)
	}
	// Same MAC on a port that shares A's hint entry: the hint's slot holds
	// the address bound to A's port, not this one.
	if r := c.FromClient(tcpFrame(macA, ipA, tapIP), portA+slotHints, 2); r != IPBindingConflict {
		t.Fatalf("A's MAC and address on port %d: %v, want %v", portA+slotHints, r, IPBindingConflict)
	}
	p.RemovePort(portA)
	if r := c.FromClient(tcpFrame(macB, ipA, tapIP), portB, 3); r != Pass {
		t.Fatalf("B taking A's released address: %v", r)
	}
	// A's hint still names the slot; the key matches, the client does not.
	if r := c.FromClient(tcpFrame(macA, ipA, tapIP), portA, 4); r != IPBindingConflict {
		t.Fatalf("A using its old address, now B's: %v, want %v", r, IPBindingConflict)
	}
	if got := listBindings(p); len(got) != 1 || got[netip.MustParseAddr(ipA)] != (bound{macB, portB}) {
		t.Fatalf("Bindings = %v, want only B's", got)
	}
}
