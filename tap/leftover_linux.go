package tap

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Devices a killed daemon left. Close deletes the bridge and the VXLAN
// device Open created, but a daemon killed with SIGKILL never gets there,
// and the next start would find them in its way. Open marks what it
// creates with Config.Mark (the interface alias), and a later Open with
// the same Mark removes a device of that name and mark before creating its
// own. A device without the mark was made by someone else and is never
// touched.

// markCreated gives l, just created, the mark (unless LinkAdd already
// did) and records it for Created.
func (d *Device) markCreated(h *netlink.Handle, l netlink.Link, mark string) error {
	if mark == "" {
		return nil
	}
	name := l.Attrs().Name
	if l.Attrs().Alias != mark {
		if err := h.LinkSetAlias(l, mark); err != nil {
			return devErr(name, fmt.Sprintf("set alias %q, the mark of a device vknetd created", mark), err)
		}
	}
	d.created = append(d.created, Created{Name: name, Index: l.Attrs().Index, Mark: mark})
	return nil
}

// isLeftover says whether l is a device of kind that an Open with mark
// created and did not delete.
func isLeftover(l netlink.Link, kind, mark string) bool {
	return mark != "" && l.Attrs().Alias == mark && l.Type() == kind
}

// removeLeftover deletes the device name if it is of kind and carries
// mark: what a daemon killed before Close left behind.
func removeLeftover(h *netlink.Handle, name, kind, mark string) error {
	if mark == "" || name == "" {
		return nil
	}
	l, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		return nil
	case err != nil:
		return devErr(name, "look up interface", err)
	case !isLeftover(l, kind, mark):
		return nil
	}
	if err := h.LinkDel(l); err != nil {
		return devErr(name, fmt.Sprintf("delete the %s device a killed vknetd left (alias %q)", kind, mark), err)
	}
	return nil
}

// RemoveCreated deletes the device c if it is still the one Open created:
// the same index, name and mark. One that is gone is fine. It is for a
// process that outlives the daemon (the keeper), in the daemon's network
// namespace.
func RemoveCreated(c Created) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("tap: open rtnetlink socket: %w", err)
	}
	defer h.Close()
	l, err := h.LinkByIndex(c.Index)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound) || errors.Is(err, unix.ENODEV):
		return nil
	case err != nil:
		return devErr(c.Name, "look up interface", err)
	case l.Attrs().Name != c.Name || c.Mark == "" || l.Attrs().Alias != c.Mark:
		return nil // replaced by someone else's device: theirs
	}
	return wrapErr(c.Name, "delete", h.LinkDel(l))
}
