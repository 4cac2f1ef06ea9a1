package secure

import (
	"testing"

	"github.com/gopacket/gopacket/layers"
)

func assertNoAllocs(t *testing.T, name string, fn func()) {
	t.Helper()
	if n := testing.AllocsPerRun(100, fn); n != 0 {
		t.Errorf("%s: %v allocations per frame, want 0", name, n)
	}
}

func TestZeroAllocs(t *testing.T) {
	p := newTestPolicy(t, testConfig(true))
	c := p.NewChecker()
	tcp := tcpFrame(macA, ipA, tapIP)
	arp := arpFrame(macA, layers.ARPRequest, macA, ipA, tapIP)
	spoofed := tcpFrame(macA, "10.0.0.1", tapIP)
	conflict := tcpFrame(macB, ipA, tapIP)
	var now int64
	assertNoAllocs(t, "legit TCP FromClient+ToTap", func() {
		now++
		if c.FromClient(tcp, portA, now) != Pass || c.ToTap() != Pass {
			t.Fatal("legit TCP dropped")
		}
	})
	assertNoAllocs(t, "ARP FromClient+ToTap", func() {
		now++
		if c.FromClient(arp, portA, now) != Pass || c.ToTap() != Pass {
			t.Fatal("ARP dropped")
		}
	})
	assertNoAllocs(t, "spoofed source", func() {
		if c.FromClient(spoofed, portA, now) != IPv4SrcOutside {
			t.Fatal("spoofed frame not dropped")
		}
	})
	assertNoAllocs(t, "binding conflict", func() {
		if c.FromClient(conflict, portB, now) != IPBindingConflict {
			t.Fatal("conflict not dropped")
		}
	})
	assertNoAllocs(t, "Expire", func() { p.Expire(now) })
}

// TestZeroAllocsEveryRule checks every frame of the rule table, malformed
// ones included: gopacket's error paths allocate, and the hand checks in
// front of it must keep an attacker's garbage from reaching them.
func TestZeroAllocsEveryRule(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		p := newTestPolicy(t, testConfig(v6))
		c := p.NewChecker()
		for _, tc := range ruleCases() {
			for _, f := range [][]byte{tc.prior, tc.frame} {
				if f == nil {
					continue
				}
				assertNoAllocs(t, tc.name, func() {
					c.FromClient(f, portA, 1)
					c.ToTap()
				})
			}
		}
	}
}

// TestZeroAllocsUsers: the users' rules, checked when an address is first
// bound, allocate nothing either: a claim in another user's range, one
// past the quota, and binding and releasing addresses in a range and out.
func TestZeroAllocsUsers(t *testing.T) {
	p := newTestPolicy(t, tenantConfig(1, userNet(uidB, "198.18.7.128/26"), userNet(uidA, "198.18.7.64/27")))
	c := p.NewChecker()
	p.SetOwner(portA, 1, uidA)
	p.SetOwner(portB, 2, uidB)
	mA, mB := clientMAC(portA), clientMAC(portB)
	inB := arpFrame(mA, layers.ARPRequest, mA, "198.18.7.130", "198.18.7.1")
	ownB := tcpFrame(mB, "198.18.7.131", "198.18.7.1")
	freeB := tcpFrame(mB, "198.18.7.10", "198.18.7.1")
	ownA := tcpFrame(mA, "198.18.7.65", "198.18.7.1")
	var now int64
	assertNoAllocs(t, "claim in another user's range", func() {
		if c.FromClient(inB, portA, now) != IPInOtherUserNet {
			t.Fatal("claim in B's range not dropped")
		}
	})
	assertNoAllocs(t, "claim outside the user's ranges", func() {
		if c.FromClient(freeB, portB, now) != IPOutsideUserNet {
			t.Fatal("B's claim outside its range not dropped")
		}
	})
	assertNoAllocs(t, "bind in range, refresh, release", func() {
		now++
		if c.FromClient(ownB, portB, now) != Pass || c.FromClient(ownB, portB, now) != Pass || c.FromClient(ownA, portA, now) != Pass {
			t.Fatal("own range refused")
		}
		p.RemovePort(portB)
		p.RemovePort(portA)
	})
	p.SetOwner(3, 3, 4444) // a user without ranges
	m3 := clientMAC(3)
	first := tcpFrame(m3, "198.18.7.20", "198.18.7.1")
	second := tcpFrame(m3, "198.18.7.21", "198.18.7.1")
	assertNoAllocs(t, "quota", func() {
		now++
		if c.FromClient(first, 3, now) != Pass || c.FromClient(second, 3, now) != UserBindingLimit {
			t.Fatal("quota of 1 not kept")
		}
		p.RemovePort(3)
	})
}
