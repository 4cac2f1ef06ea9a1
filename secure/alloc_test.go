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
