package secure

import (
	"net/netip"
	"testing"
)

// A migrated VM's bindings move whole to its new port: its addresses are
// then its own there (and no longer on the old port), the ports' counts
// follow, and another MAC's bindings on the old port stay.
func TestMoveMACMovesItsBindingsOnly(t *testing.T) {
	p := newTestPolicy(t, testConfig(true))
	c := p.NewChecker()
	for _, f := range [][]byte{tcpFrame(macA, ipA, tapIP), tcpFrame(macA, "198.18.0.12", tapIP), tcpFrame(macB, ipB, tapIP)} {
		if r := c.FromClient(f, portA, 1); r != Pass {
			t.Fatalf("binding on the old port: %v", r)
		}
	}
	if n := p.MoveMAC(macA, portA, portB); n != 2 {
		t.Fatalf("MoveMAC moved %d bindings, want 2", n)
	}
	got := listBindings(p)
	want := map[netip.Addr]bound{
		netip.MustParseAddr(ipA):           {macA, portB},
		netip.MustParseAddr("198.18.0.12"): {macA, portB},
		netip.MustParseAddr(ipB):           {macB, portA},
	}
	if len(got) != len(want) {
		t.Fatalf("bindings %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("bindings %v, want %v", got, want)
		}
	}
	if p.table.perPort[portA] != 1 || p.table.perPort[portB] != 2 {
		t.Fatalf("per-port counts A %d B %d, want 1 and 2", p.table.perPort[portA], p.table.perPort[portB])
	}
	if r := c.FromClient(tcpFrame(macA, ipA, tapIP), portB, 2); r != Pass {
		t.Fatalf("the VM on its new port: %v", r)
	}
	if r := c.FromClient(tcpFrame(macA, ipA, tapIP), portA, 2); r != IPBindingConflict {
		t.Fatalf("the old port with the VM's address: %v, want %v", r, IPBindingConflict)
	}
	if n := p.ReleaseMAC(macA, portB); n != 2 || len(listBindings(p)) != 1 || p.table.perPort[portB] != 0 {
		t.Fatalf("ReleaseMAC released %d, left %v, port B counts %d", n, listBindings(p), p.table.perPort[portB])
	}
	if n := p.MoveMAC(macA, portA, portB); n != 0 {
		t.Fatalf("MoveMAC of a MAC with no bindings moved %d", n)
	}
}
