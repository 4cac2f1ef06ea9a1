package tap

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/handover"
)

// Export describes the open device for the daemon that takes it over
// (vknetctl upgrade); the fd is sent apart, and stays this Device's.
func (d *Device) Export() handover.TAP {
	s := handover.TAP{Fd: -1, Name: d.name, Index: d.os.tapIndex, MAC: d.mac, HostMAC: d.hostMAC, MTU: d.mtu,
		Bridge: d.bridge, VnetHdr: d.vnetHdr, USO: d.uso, Existed: d.existed, Prefix: d.prefix}
	if d.vx != nil {
		s.VXLAN, s.VXIndex, s.VXMAC = d.vx.name, d.vx.index, d.vx.mac
	}
	for _, c := range d.created {
		s.Created = append(s.Created, handover.Created{Name: c.Name, Index: c.Index, Mark: c.Mark})
	}
	return s
}

// Adopt takes over, on fd, the device a previous daemon opened and
// describes in s: nothing is configured, created or flapped. Its Close
// undoes what matters of the first Open: it deletes the TAP if Open had
// created it, the devices Open created (marked, as the keeper does), the
// pins, and the host's address on a device that stays. It does not know
// the MTU, up state or bridge a pre-existing TAP had before the first
// daemon: those stay as the daemon left them.
func Adopt(fd int, s handover.TAP) (*Device, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("tap: open rtnetlink socket: %w", err)
	}
	l, err := h.LinkByIndex(s.Index)
	if err != nil || l.Attrs().Name != s.Name || !isTAP(l) {
		h.Close()
		return nil, fmt.Errorf("tap: adopting %s (index %d): it is not there any more (%v)", s.Name, s.Index, err)
	}
	d := &Device{name: s.Name, fd: fd, mac: s.MAC, mtu: s.MTU, hostMAC: s.HostMAC, bridge: s.Bridge,
		vnetHdr: s.VnetHdr, uso: s.USO, existed: s.Existed, prefix: s.Prefix, os: osDevice{h: h, tapIndex: s.Index}}
	if s.VXLAN != "" {
		d.vx = &vxlanPort{name: s.VXLAN, index: s.VXIndex, mac: s.VXMAC}
	}
	for _, c := range s.Created {
		d.created = append(d.created, Created{Name: c.Name, Index: c.Index, Mark: c.Mark})
	}
	d.onClose(func() error { h.Close(); return nil })
	if s.Prefix.IsValid() && (s.Existed || s.Bridge != "") {
		host := s.Name
		if s.Bridge != "" {
			host = s.Bridge
		}
		d.onClose(func() error {
			hl, err := h.LinkByName(host)
			if err != nil {
				return nil // gone with its device
			}
			err = h.AddrDel(hl, &netlink.Addr{IPNet: ipNet(s.Prefix)})
			if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return wrapErr(host, "remove address "+s.Prefix.String(), err)
			}
			return nil
		})
	}
	for _, c := range d.created {
		d.onClose(func() error { return RemoveCreated(c) })
	}
	d.onClose(func() error {
		err := unix.Close(fd)
		if err != nil {
			err = devErr(d.name, "close", err)
		}
		if s.Existed {
			return err
		}
		l, lerr := h.LinkByIndex(s.Index)
		if lerr == nil && l.Attrs().Name == s.Name && isTAP(l) {
			// It may vanish meanwhile, with another process's last copy
			// of its fd (a supervisor letting go).
			if derr := h.LinkDel(l); derr != nil && !errors.Is(derr, unix.ENODEV) && !errors.Is(derr, unix.ENOENT) {
				err = errors.Join(err, devErr(d.name, "delete", derr))
			}
		}
		return err
	})
	return d, nil
}
