package engine

import (
	"testing"

	"github.com/vknetd/vknetd/internal/vhostguest"
)

// A vhost-user source stops its rings at the switch-over (QEMU sends
// GET_VRING_BASE): the destination's first frame from the VM's MAC, not an
// announcement and with no silence, takes the MAC. Before the stop the same
// frame is src-mac-in-use.
func TestVhostUserStoppedSourceGivesUpItsMAC(t *testing.T) {
	e, path := vhostSwitch(t, true, nil)
	src := startGuest(t, path, vhostguest.Options{})
	dst := startGuest(t, path, vhostguest.Options{})
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 2 })
	fromVM := ipv4UDP(broadcast, mac(5), vmIP, vmBcast)
	if src.Send([][]byte{fromVM}, nil) != 1 {
		t.Fatal("the source could not send")
	}
	// The source's port is the one that learned the MAC; the other is the
	// destination's.
	var srcID, dstID uint32
	waitFor(t, func() bool {
		st, _ := e.Stats()
		for _, p := range st.Ports {
			if p.MACs == 1 {
				srcID = p.ID
			} else {
				dstID = p.ID
			}
		}
		return srcID != 0 && dstID != 0
	})
	inUse := func(id uint32) uint64 {
		st, _ := e.Stats()
		for _, p := range st.Ports {
			for _, d := range p.Drops {
				if p.ID == id && d.Reason == DropMACInUse.String() {
					return d.Count
				}
			}
		}
		return 0
	}
	if dst.Send([][]byte{fromVM}, nil) != 1 {
		t.Fatal("the destination could not send")
	}
	waitFor(t, func() bool { return inUse(dstID) == 1 })

	if _, err := src.Stop(); err != nil {
		t.Fatalf("stopping the source's rings: %v", err)
	}
	if dst.Send([][]byte{fromVM}, nil) != 1 {
		t.Fatal("the destination could not send")
	}
	waitFor(t, func() bool { s, _ := e.Stats(); return s.MACMoves == 1 })
	macs, _ := e.MACs()
	if len(macs) != 1 || macs[0].Port != dstID {
		t.Fatalf("MAC table %+v, want the VM's MAC on the destination's port %d", macs, dstID)
	}
	bs, _ := e.Bindings()
	if len(bs) != 1 || bs[0].Port != dstID || bs[0].MAC != mac(5) {
		t.Fatalf("bindings %+v, want the VM's address on the MAC's new port %d", bs, dstID)
	}
	if n := inUse(dstID); n != 1 {
		t.Fatalf("the destination's frame after the stop was dropped: src-mac-in-use %d", n)
	}
}
