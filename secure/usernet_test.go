package secure

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/layers"
)

const (
	uidA int32 = 4242
	uidB int32 = 4343
)

// tenantConfig is the network of the squatting report: a /24, 16
// addresses a client, and room for 16 clients of one user and more.
func tenantConfig(userIPs int, nets ...UserNet) Config {
	return Config{
		Secure:       true,
		Network:      netip.MustParsePrefix("198.18.7.1/24"),
		TapMAC:       tapMAC,
		MaxBindings:  1024,
		PortBindings: 16,
		MaxPorts:     64,
		UserBindings: userIPs,
		UserNets:     nets,
	}
}

func userNet(uid int32, cidr string) UserNet {
	return UserNet{UID: uid, Prefix: netip.MustParsePrefix(cidr), Given: fmt.Sprintf("%d=%s", uid, cidr)}
}

func clientMAC(port uint32) [6]byte { return [6]byte{0x52, 0x54, 0, 0, byte(port >> 8), byte(port)} }

// squat is the report's attack: user A (owner 1) connects 16 clients on
// ports 1-16, each announcing 16 addresses by gratuitous ARP, from
// 198.18.7.2 up. It returns how many claims passed and the reasons of
// those that did not.
func squat(c *Checker, p *Policy) (bound int, refused map[Reason]int) {
	refused = map[Reason]int{}
	next := 2
	for port := uint32(1); port <= 16; port++ {
		p.SetOwner(port, 1, uidA)
		m := clientMAC(port)
		for i := 0; i < 16; i++ {
			a := fmt.Sprintf("198.18.7.%d", next%254+1)
			next++
			if r := c.FromClient(arpFrame(m, layers.ARPRequest, m, a, a), port, 1); r == Pass {
				bound++
			} else {
				refused[r]++
			}
		}
	}
	return bound, refused
}

// TestSquattingOneUserAgainstAnother: with a user quota, or with ranges,
// one user's 16 clients cannot take the address another user's client
// announces next; without either (the old behaviour) they can.
func TestSquattingOneUserAgainstAnother(t *testing.T) {
	victim := "198.18.7.200"
	for _, tc := range []struct {
		name        string
		cfg         Config
		wantBound   int
		wantRefusal Reason
		victimPass  bool
	}{
		{"no limit", tenantConfig(0), 253, IPBindingConflict, false},
		{"--user-ips 63 (the /24's default)", tenantConfig(63), 63, UserBindingLimit, true},
		{"--user-net B=198.18.7.192/26", tenantConfig(0, userNet(uidB, "198.18.7.192/26")), 253 - 63, IPInOtherUserNet, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPolicy(t, tc.cfg)
			c := p.NewChecker()
			bound, refused := squat(c, p)
			if bound != tc.wantBound || refused[tc.wantRefusal] == 0 {
				t.Errorf("A bound %d addresses, refused %v; want %d bound and refusals as %v", bound, refused, tc.wantBound, tc.wantRefusal)
			}
			const portB = 40
			p.SetOwner(portB, 2, uidB)
			m := clientMAC(portB)
			passed := 0
			for i := 0; i < 3; i++ {
				if r := c.FromClient(arpFrame(m, layers.ARPRequest, m, victim, victim), portB, 2); r == Pass {
					passed++
				} else if tc.victimPass {
					t.Errorf("B's announcement %d: %v, want pass", i, r)
				}
			}
			if !tc.victimPass && passed != 0 {
				t.Errorf("B's announcements passed %d times with no limit: the attack setup is broken", passed)
			}
		})
	}
}

// TestUserBindingLimit: a user's clients share the quota, IPv6 addresses
// included; other users and owner-less ports are not held back by it; a
// released binding gives its place back.
func TestUserBindingLimit(t *testing.T) {
	cfg := testConfig(true)
	cfg.UserBindings = 3
	p := newTestPolicy(t, cfg)
	c := p.NewChecker()
	const portA2, portC, portFree = 3, 4, 5
	p.SetOwner(portA, 1, uidA)
	p.SetOwner(portA2, 1, uidA)
	p.SetOwner(portC, 2, uidB)
	pass := func(f []byte, port uint32) {
		t.Helper()
		if r := c.FromClient(f, port, 1); r != Pass {
			t.Fatalf("port %d: %v (%s)", port, r, c.Describe())
		}
	}
	mA2 := mac("52:54:00:00:00:a2")
	pass(tcpFrame(macA, ipA, tapIP), portA)
	pass(udp6Frame(macA, ip6A, tap6), portA)
	pass(tcpFrame(mA2, "198.18.0.20", tapIP), portA2)
	if r := c.FromClient(tcpFrame(mA2, "198.18.0.21", tapIP), portA2, 1); r != UserBindingLimit {
		t.Fatalf("A's fourth address: %v, want %v", r, UserBindingLimit)
	}
	if r := c.FromClient(udp6Frame(mA2, "2001:db8::a2", tap6), portA2, 1); r != UserBindingLimit {
		t.Fatalf("A's fourth address, IPv6: %v, want %v", r, UserBindingLimit)
	}
	pass(tcpFrame(macA, ipA, tapIP), portA) // bound ones still pass
	pass(tcpFrame(macB, ipB, tapIP), portC)
	for i := 0; i < 4; i++ {
		pass(tcpFrame(mac("52:54:00:00:00:ff"), fmt.Sprintf("198.18.0.%d", 30+i), tapIP), portFree)
	}
	if n := p.table.perOwner[1]; n != 3 {
		t.Fatalf("user A counts %d bindings, want 3", n)
	}
	p.SetOwner(portA, 0, 0) // the engine's order: owner first, then bindings
	p.RemovePort(portA)
	pass(tcpFrame(mA2, "198.18.0.21", tapIP), portA2)
	if n := p.table.perOwner[1]; n != 2 {
		t.Fatalf("user A counts %d bindings after port A left, want 2", n)
	}
}

// TestUserNets: a user's range is its own, that user binds IPv4 only in
// it, its addresses do not count against the quota, and addresses in no
// range stay first come, first served.
func TestUserNets(t *testing.T) {
	cfg := testConfig(true)
	cfg.UserBindings = 1
	cfg.UserNets = []UserNet{userNet(uidB, "198.18.1.0/24"), userNet(uidB, "198.18.3.0/25"), userNet(uidA, "198.18.2.0/24")}
	p := newTestPolicy(t, cfg)
	c := p.NewChecker()
	const portC, portNone = 3, 4
	mC := mac("52:54:00:00:00:0c")
	p.SetOwner(portA, 1, uidA)
	p.SetOwner(portB, 2, uidB)
	p.SetOwner(portC, 3, 4444)
	for _, tc := range []struct {
		name string
		mac  [6]byte
		port uint32
		ip   string
		want Reason
	}{
		{"B in its range", macB, portB, "198.18.1.5", Pass},
		{"B in its second range", macB, portB, "198.18.3.127", Pass},
		{"B in its range, past the quota", macB, portB, "198.18.1.6", Pass},
		{"B past the end of its second range", macB, portB, "198.18.3.128", IPOutsideUserNet},
		{"B outside its ranges", macB, portB, "198.18.0.50", IPOutsideUserNet},
		{"B by ARP outside its ranges", macB, portB, "198.18.0.51", IPOutsideUserNet},
		{"B's IPv6 (ranges are IPv4)", macB, portB, "2001:db8::b", Pass},
		{"A in B's range", macA, portA, "198.18.1.7", IPInOtherUserNet},
		{"A by ARP in B's range", macA, portA, "198.18.3.0", IPInOtherUserNet},
		{"A in its range", macA, portA, "198.18.2.1", Pass},
		{"C, rangeless, in no range", mC, portC, "198.18.0.60", Pass},
		{"C, past its quota", mC, portC, "198.18.0.61", UserBindingLimit},
		{"C in B's range", mC, portC, "198.18.1.8", IPInOtherUserNet},
		{"a port of no user in A's range", macA, portNone, "198.18.2.2", IPInOtherUserNet},
		{"a port of no user in no range", mC, portNone, "198.18.0.62", Pass},
	} {
		var f []byte
		switch {
		case strings.Contains(tc.ip, ":"):
			f = udp6Frame(tc.mac, tc.ip, tap6)
		case strings.Contains(tc.name, "ARP"):
			f = arpFrame(tc.mac, layers.ARPReply, tc.mac, tc.ip, tapIP)
		default:
			f = tcpFrame(tc.mac, tc.ip, tapIP)
		}
		if r := c.FromClient(f, tc.port, 1); r != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, r, tc.want)
		}
	}
	got := map[string]Source{}
	p.Bindings(func(b Binding) {
		got[b.IP.String()] = b.Source
		if want := 1 + int64(cfg.BindingAge); b.Expires != want {
			t.Errorf("%s expires at %d, want %d (last use plus the aging time)", b.IP, b.Expires, want)
		}
	})
	for ip, want := range map[string]Source{"198.18.1.5": Range, "198.18.1.6": Range, "198.18.3.127": Range, "198.18.2.1": Range,
		"2001:db8::b": FirstUse, "198.18.0.60": FirstUse, "198.18.0.62": FirstUse} {
		if got[ip] != want {
			t.Errorf("binding of %s: source %v, want %v", ip, got[ip], want)
		}
	}
	if len(got) != 7 {
		t.Errorf("bindings %v, want 7", got)
	}
}

func TestUserNetsRefused(t *testing.T) {
	network := netip.MustParsePrefix("198.18.7.1/24")
	for _, tc := range []struct {
		nets []UserNet
		want string // "" for accepted
	}{
		{[]UserNet{userNet(1, "198.18.7.0/25"), userNet(2, "198.18.7.128/25")}, ""},
		{[]UserNet{userNet(1, "198.18.7.0/24")}, ""},
		{[]UserNet{userNet(1, "198.18.7.0/25"), userNet(2, "198.18.7.64/26")}, "--user-net 1=198.18.7.0/25 overlaps --user-net 2=198.18.7.64/26"},
		{[]UserNet{userNet(2, "198.18.7.64/26"), userNet(1, "198.18.7.64/27")}, "--user-net 2=198.18.7.64/26 overlaps --user-net 1=198.18.7.64/27"},
		{[]UserNet{userNet(1, "198.18.7.8/29"), userNet(1, "198.18.7.8/30")}, "overlaps"},
		{[]UserNet{userNet(1, "198.18.8.0/25")}, "--user-net 1=198.18.8.0/25: 198.18.8.0/25 is not inside the network address/cidrbits (198.18.7.0/24)"},
		{[]UserNet{userNet(1, "198.18.6.0/23")}, "not inside the network"},
		{[]UserNet{userNet(1, "198.18.7.130/25")}, "did you mean 198.18.7.128/25?"},
		{[]UserNet{userNet(1, "2001:db8::/64")}, "must be an IPv4 prefix"},
		{[]UserNet{userNet(-1, "198.18.7.0/25")}, "a name or a uid"},
	} {
		err := CheckUserNets(network, tc.nets)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.nets, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: error %v, want one containing %q", tc.nets, err, tc.want)
		}
		if tc.want != "" {
			cfg := tenantConfig(0, tc.nets...)
			if _, err := New(cfg); err == nil {
				t.Errorf("%v: New accepted the ranges", tc.nets)
			}
		}
	}
}

// TestRangeOf checks the binary search against a linear scan.
func TestRangeOf(t *testing.T) {
	nets := []UserNet{userNet(3, "198.18.7.200/29"), userNet(1, "198.18.7.0/26"), userNet(2, "198.18.7.128/28"), userNet(4, "198.18.7.255/32")}
	p := newTestPolicy(t, tenantConfig(0, nets...))
	for a := uint32(0xc6120600); a < 0xc6120900; a++ {
		want := -1
		for i, r := range p.ranges {
			if r.lo <= a && a <= r.hi {
				want = i
			}
		}
		if got := p.rangeOf(a); got != want {
			t.Fatalf("rangeOf(%#x) = %d, want %d", a, got, want)
		}
	}
}

// With --ip-source dhcp a static address in a --user-net range still works
// for that range's user, unleased, and is bound with the source Range; an
// address outside the user's ranges still needs a lease, and another
// user's client still may not use the range.
func TestUserNetStaticUnderDHCP(t *testing.T) {
	cfg := tenantConfig(0, userNet(uidB, "198.18.7.192/26"))
	cfg.IPSource = IPSourceDHCP
	p := newTestPolicy(t, cfg)
	c := p.NewChecker()
	const portB, portA = 40, 41
	p.SetOwner(portB, 2, uidB)
	p.SetOwner(portA, 1, uidA)
	b, a := clientMAC(portB), clientMAC(portA)
	if r := c.FromClient(tcpFrame(b, "198.18.7.200", "198.18.7.1"), portB, 1); r != Pass {
		t.Fatalf("B's static address in its own range: %v, want pass", r)
	}
	if r := c.FromClient(tcpFrame(b, "198.18.7.20", "198.18.7.1"), portB, 2); r != IPNotLeased && r != IPOutsideUserNet {
		t.Fatalf("B's unleased address outside its range: %v, want it refused", r)
	}
	if r := c.FromClient(tcpFrame(a, "198.18.7.201", "198.18.7.1"), portA, 3); r == Pass {
		t.Fatal("A used an address in B's range")
	}
	if r := c.FromClient(tcpFrame(a, "198.18.7.30", "198.18.7.1"), portA, 4); r != IPNotLeased {
		t.Fatalf("A's unleased address: %v, want %v", r, IPNotLeased)
	}
	var sources []Source
	p.Bindings(func(bd Binding) { sources = append(sources, bd.Source) })
	if len(sources) != 1 || sources[0] != Range {
		t.Fatalf("bindings' sources %v, want one range binding", sources)
	}
}
