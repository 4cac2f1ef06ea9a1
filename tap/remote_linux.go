package tap

import (
	"errors"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Reading the bridge's forwarding database and the VXLAN device's counters
// is for the listings (vknetctl) only: each call is a netlink dump, on the
// caller's goroutine, never on the forwarding path.

var errNoVXLAN = errors.New("tap: no VXLAN device")

// RemoteMACs lists the MACs the bridge has learned (or been told, by EVPN)
// behind the VXLAN device, with the peer each sits behind when the
// device's own table says. It returns nil without a VXLAN device.
func (d *Device) RemoteMACs() ([]RemoteMAC, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.vx == nil {
		return nil, nil
	}
	if d.closed {
		return nil, errNoVXLAN
	}
	// Both tables come in one dump: the bridge's entries for the port
	// (NTF_MASTER) and the device's own MAC-to-peer entries (NTF_SELF).
	entries, err := d.os.h.NeighList(d.vx.index, unix.AF_BRIDGE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, devErr(d.vx.name, "list forwarding entries", err)
	}
	vtep := map[[6]byte]netip.Addr{}
	var behind [][6]byte
	for _, e := range entries {
		if len(e.HardwareAddr) != 6 {
			continue
		}
		mac := [6]byte(e.HardwareAddr)
		if mac == [6]byte{} || mac == d.vx.mac || mac[0]&1 != 0 {
			continue // the peers' flood entries, the device's own MAC, multicast
		}
		if e.Flags&netlink.NTF_SELF != 0 {
			if a, ok := netip.AddrFromSlice(e.IP); ok {
				vtep[mac] = a.Unmap()
			}
			continue
		}
		behind = append(behind, mac)
	}
	out := make([]RemoteMAC, 0, len(behind))
	for _, mac := range behind {
		out = append(out, RemoteMAC{MAC: mac, Dev: d.vx.name, VTEP: vtep[mac]})
	}
	return out, nil
}

// Remote reads the VXLAN device's counters; ok is false without one.
func (d *Device) Remote() (c RemoteCounters, ok bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.vx == nil {
		return c, false, nil
	}
	if d.closed {
		return c, true, errNoVXLAN
	}
	l, err := d.os.h.LinkByIndex(d.vx.index)
	if err != nil {
		return c, true, devErr(d.vx.name, "read counters", err)
	}
	if s := l.Attrs().Statistics; s != nil {
		c = RemoteCounters{RxFrames: s.RxPackets, RxBytes: s.RxBytes, TxFrames: s.TxPackets, TxBytes: s.TxBytes}
	}
	return c, true, nil
}
