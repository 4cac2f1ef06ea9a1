package tap

import (
	"bytes"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

// joinBridge creates the bridge if missing, enslaves the TAP to it and
// brings the bridge up. It returns the bridge.
//
// A bridge created here is marked (Config.Mark) and gets the TAP's MAC as
// its own, set explicitly, so that the host's MAC (secure mode reserves
// it) does not move when the VXLAN device or anything else joins: a bridge
// left to choose takes the lowest MAC among its ports. A bridge that existed gets back at Close the
// MAC and MTU it had, which its ports coming and going may have changed.
func (d *Device) joinBridge(h *netlink.Handle, link netlink.Link, priorMaster int, name string, tapExisted bool, mark string) (netlink.Link, error) {
	br, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	created := false
	switch {
	case errors.As(err, &notFound):
		attrs := netlink.LinkAttrs{Name: name, HardwareAddr: net.HardwareAddr(d.mac[:]), Alias: mark}
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			return nil, devErr(name, "create bridge (-b)", err)
		}
		created = true
		br, err = h.LinkByName(name)
		if err != nil {
			// Cannot know which link to delete safely; say so.
			return nil, devErr(name, "look up the bridge just created (remove it with ip link del "+name+")", err)
		}
		index := br.Attrs().Index
		d.onClose(func() error {
			l, err := h.LinkByIndex(index)
			if err != nil || l.Attrs().Name != name || l.Type() != "bridge" {
				return nil // already gone
			}
			return wrapErr(name, "delete bridge", h.LinkDel(l))
		})
		if err := d.markCreated(h, br, mark); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, devErr(name, "look up bridge (-b)", err)
	case br.Type() != "bridge":
		return nil, fmt.Errorf("tap: bridge %s (-b) exists and is a %s device, not a bridge; choose another bridge name or remove it (ip link del %s)",
			name, br.Type(), name)
	default:
		d.restoreBridgeLater(h, br)
	}

	brIndex := br.Attrs().Index
	if priorMaster != brIndex {
		if err := h.LinkSetMasterByIndex(link, brIndex); err != nil {
			return nil, devErr(d.name, "add to bridge "+name, err)
		}
		// A TAP created here leaves a bridge that stays before the
		// bridge's MAC and MTU are checked; its deletion comes later.
		if tapExisted || !created {
			d.onClose(func() error {
				if priorMaster == 0 || !tapExisted {
					return wrapErr(d.name, "remove from bridge "+name, h.LinkSetNoMaster(link))
				}
				return wrapErr(d.name, "restore previous master", h.LinkSetMasterByIndex(link, priorMaster))
			})
		}
	}

	if br.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(br); err != nil {
			return nil, devErr(name, "bring bridge up", err)
		}
		if !created {
			d.onClose(func() error { return wrapErr(name, "set bridge down again", h.LinkSetDown(br)) })
		}
	}
	return br, nil
}

// restoreBridgeLater records, before any port joins, the MAC and MTU of a
// bridge that existed, and puts them back at Close once the ports Open
// added have left, if they differ then. A bridge whose last port leaves
// keeps that port's MAC, and one whose ports all had a larger MTU keeps
// theirs.
func (d *Device) restoreBridgeLater(h *netlink.Handle, br netlink.Link) {
	name, index := br.Attrs().Name, br.Attrs().Index
	mac := append(net.HardwareAddr(nil), br.Attrs().HardwareAddr...)
	mtu := br.Attrs().MTU
	d.onClose(func() error {
		now, err := h.LinkByIndex(index)
		if err != nil {
			return devErr(name, "look up bridge", err)
		}
		var errs []error
		if !bytes.Equal(now.Attrs().HardwareAddr, mac) {
			errs = append(errs, wrapErr(name, "restore MAC "+mac.String(), h.LinkSetHardwareAddr(now, mac)))
		}
		if now.Attrs().MTU != mtu {
			errs = append(errs, wrapErr(name, fmt.Sprintf("restore MTU %d", mtu), h.LinkSetMTU(now, mtu)))
		}
		return errors.Join(errs...)
	})
}
