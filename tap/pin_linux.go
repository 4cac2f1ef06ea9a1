package tap

import (
	"errors"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The kernel's bridge learns on its own. The switch refuses a frame from
// the TAP's side whose source MAC is live on a client port, but before
// that frame reaches the TAP the bridge has already learned that MAC behind
// the port it came in by (the VXLAN device, a LAN port), so the host's own
// frames to that client would go out there, to whoever sent it, until the
// client next sends through the bridge; a frame to the host's own MAC never
// even reaches the switch. So the daemon pins the MACs of its clients on
// the TAP's bridge port as static sticky entries, which the bridge never
// moves nor ages (Linux 4.19 and later).

// PinLocal makes macs the MACs pinned on the TAP's bridge port: it adds an
// entry for each one not pinned yet (taking it over from any port the
// bridge learned it on) and deletes those no longer in macs. Without a
// bridge it does nothing. Close removes the pins.
func (d *Device) PinLocal(macs [][6]byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.bridge == "" || d.os.tapIndex == 0 {
		return nil
	}
	if d.os.pinned == nil {
		d.os.pinned = make(map[[6]byte]bool)
		d.adoptPins()
		d.onClose(func() error { return d.unpin(nil) })
	}
	want := make(map[[6]byte]bool, len(macs))
	var errs []error
	for _, m := range macs {
		want[m] = true
		if d.os.pinned[m] {
			continue
		}
		if err := d.os.h.NeighSet(d.pinEntry(m)); err != nil {
			errs = append(errs, devErr(d.name, "pin "+net.HardwareAddr(m[:]).String()+" on bridge "+d.bridge, err))
			continue
		}
		d.os.pinned[m] = true
	}
	errs = append(errs, d.unpin(want))
	return errors.Join(errs...)
}

// adoptPins counts as its own the static sticky entries already on the
// TAP's port, so that they are kept only while their MACs are live: a
// daemon killed on a TAP that stays in its bridge (-t of a persistent TAP)
// leaves its pins, which nothing else would remove. On a TAP the daemon
// created there are none.
func (d *Device) adoptPins() {
	entries, err := d.os.h.NeighList(d.os.tapIndex, unix.AF_BRIDGE)
	if err != nil {
		return // none adopted: they stay, as before
	}
	for _, e := range entries {
		// A dump marks the bridge's entries with NDA_MASTER, not NTF_MASTER.
		if e.LinkIndex == d.os.tapIndex && e.MasterIndex != 0 && e.Flags&netlink.NTF_STICKY != 0 &&
			e.State&netlink.NUD_NOARP != 0 && len(e.HardwareAddr) == 6 {
			d.os.pinned[[6]byte(e.HardwareAddr)] = true
		}
	}
}

// unpin deletes the pinned entries not in keep (all with nil keep). An
// entry already gone (the TAP left the bridge) is fine.
func (d *Device) unpin(keep map[[6]byte]bool) error {
	var errs []error
	for m := range d.os.pinned {
		if keep[m] {
			continue
		}
		err := d.os.h.NeighDel(d.pinEntry(m))
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, devErr(d.name, "unpin "+net.HardwareAddr(m[:]).String()+" on bridge "+d.bridge, err))
			continue
		}
		delete(d.os.pinned, m)
	}
	return errors.Join(errs...)
}

// pinEntry is `bridge fdb replace MAC dev TAP master static sticky`.
func (d *Device) pinEntry(m [6]byte) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    d.os.tapIndex,
		Family:       unix.AF_BRIDGE,
		Flags:        netlink.NTF_MASTER | netlink.NTF_STICKY,
		State:        netlink.NUD_NOARP,
		HardwareAddr: net.HardwareAddr(m[:]),
	}
}
