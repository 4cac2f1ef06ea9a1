package tap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// vxlanPlan is what Open decided about VXLAN before changing anything.
type vxlanPlan struct {
	cfg    VXLAN
	mtu    int          // the TAP's and a created device's MTU
	dev    netlink.Link // the device to attach; nil to create one
	bridge string       // the bridge to use when -b is not given
	// leftover: the device to create exists, made by an earlier Open with
	// the same Config.Mark whose daemon was killed; Open removes it.
	leftover bool
}

// planVXLAN checks the VXLAN request against the host as it is and fits
// the MTU: a device to attach must exist and be a VXLAN device not in
// another bridge; one to create must not exist yet, and its peers must be
// reachable over an underlay whose MTU carries the TAP's MTU plus VXLAN's
// overhead. Nothing is changed here.
func planVXLAN(h *netlink.Handle, cfg Config) (*vxlanPlan, error) {
	p := &vxlanPlan{cfg: *cfg.VXLAN, mtu: cfg.MTU}
	if p.cfg.Port == 0 {
		p.cfg.Port = DefaultVXLANPort
	}
	if p.cfg.Dev != "" {
		return p, p.planAttach(h, cfg)
	}
	name := p.cfg.CreatedName()
	if l, err := h.LinkByName(name); err == nil {
		alias := l.Attrs().Alias
		switch {
		case isLeftover(l, "vxlan", cfg.Mark):
			p.leftover = true // Open removes it and creates it afresh
		case alias != "":
			return nil, fmt.Errorf("tap: a %s device %s exists already, marked %q (this daemon's mark is %q): another vknetd or tool made it; stop that one, give this daemon another --vxlan VNI, or attach the device with --vxlan-dev %s",
				l.Type(), name, alias, cfg.Mark, name)
		default:
			return nil, fmt.Errorf("tap: a %s device %s exists already and vknetd did not create it (it has no alias %q): attach it with --vxlan-dev %s, or remove it (ip link del %s)",
				l.Type(), name, cfg.Mark, name, name)
		}
	}
	if p.cfg.Local.IsValid() {
		if err := checkLocal(h, p.cfg.Local); err != nil {
			return nil, err
		}
	}
	have, dev, err := underlayMTU(h, p.cfg.Remotes)
	if err != nil {
		return nil, err
	}
	over := p.cfg.overhead()
	if err := p.fit(cfg, have, over, "the underlay device "+dev); err != nil {
		return nil, err
	}
	p.bridge = DefaultBridge(p.cfg.VNI)
	return p, nil
}

// planAttach checks an existing device (--vxlan-dev). Its MTU is its
// owner's business: a TAP MTU above it is fitted or refused, never raised.
func (p *vxlanPlan) planAttach(h *netlink.Handle, cfg Config) error {
	name := p.cfg.Dev
	l, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		return fmt.Errorf("tap: VXLAN device %s (--vxlan-dev) does not exist; create it first (ip link add %s type vxlan id VNI dstport 4789 ...), or drop --vxlan-dev and let vknetd create one with --vxlan and --vxlan-remote", name, name)
	case err != nil:
		return devErr(name, "look up VXLAN device (--vxlan-dev)", err)
	}
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		return fmt.Errorf("tap: %s (--vxlan-dev) is a %s device, not a VXLAN device; give the name of a VXLAN device", name, l.Type())
	}
	if vx.FlowBased {
		return fmt.Errorf("tap: VXLAN device %s (--vxlan-dev) is in external (collect-metadata) mode and carries no VNI of its own; give a device with one VNI", name)
	}
	if p.cfg.VNI != 0 && vx.VxlanId != p.cfg.VNI {
		return fmt.Errorf("tap: VXLAN device %s (--vxlan-dev) carries VNI %d, not %d (--vxlan); drop --vxlan or give its VNI", name, vx.VxlanId, p.cfg.VNI)
	}
	p.cfg.VNI = vx.VxlanId
	p.dev = l
	if m := l.Attrs().MasterIndex; m != 0 {
		master, err := h.LinkByIndex(m)
		if err != nil {
			return devErr(name, "look up its master", err)
		}
		mname := master.Attrs().Name
		switch {
		case master.Type() != "bridge":
			return fmt.Errorf("tap: VXLAN device %s (--vxlan-dev) is enslaved to %s, a %s device, not a bridge; take it out (ip link set %s nomaster)", name, mname, master.Type(), name)
		case cfg.Bridge != "" && cfg.Bridge != mname:
			return fmt.Errorf("tap: VXLAN device %s (--vxlan-dev) is in bridge %s, not %s (-b); pass -b %s, or take it out of %s first", name, mname, cfg.Bridge, mname, mname)
		}
		p.bridge = mname
	} else {
		p.bridge = DefaultBridge(p.cfg.VNI)
	}
	return p.fit(cfg, l.Attrs().MTU, 0, "the VXLAN device "+name+" (--vxlan-dev)")
}

// fit checks the TAP's MTU against what the VXLAN path carries (have
// bytes on what, of which overhead go to VXLAN): it lowers it when
// allowed, else refuses with what to raise or which --mtu to pass.
func (p *vxlanPlan) fit(cfg Config, have, overhead int, what string) error {
	carried := have - overhead
	if p.mtu == 0 {
		p.mtu = carried // the TAP's MTU is left alone, the device follows the underlay
	}
	if p.mtu <= carried {
		return nil
	}
	if carried < minMTU {
		return fmt.Errorf("tap: VXLAN over %s, whose MTU is %d, carries packets of at most %d bytes, too few for IPv4 (%d); raise the underlay MTU to at least %d",
			what, have, carried, minMTU, p.mtu+overhead)
	}
	if !cfg.FitMTU {
		return mtuError(p.mtu, what, have, overhead)
	}
	p.mtu = carried
	return nil
}

// fitNote is the warning for a fitted MTU: what bounded it and the fix.
func fitNote(asked, got int, p *vxlanPlan) string {
	if p.cfg.Dev != "" {
		return fmt.Sprintf("--mtu lowered from %d to %d, the MTU of the VXLAN device %s (--vxlan-dev); guests must use MTU %d, or raise %s's MTU (and its underlay's) and pass --mtu %d",
			asked, got, p.cfg.Dev, got, p.cfg.Dev, asked)
	}
	over := p.cfg.overhead()
	return fmt.Sprintf("--mtu lowered from %d to %d to fit VXLAN (%d bytes of overhead) over an underlay of MTU %d; guests must use MTU %d, or raise the underlay MTU to %d on every host",
		asked, got, over, got+over, got, asked+over)
}

// checkLocal refuses a --vxlan-local that is no address of this host: the
// kernel would accept it and send packets nobody answers.
func checkLocal(h *netlink.Handle, local netip.Addr) error {
	family := unix.AF_INET
	if local.Is6() {
		family = unix.AF_INET6
	}
	addrs, err := h.AddrList(nil, family)
	if err != nil {
		return fmt.Errorf("tap: list addresses to check --vxlan-local %s: %w", local, err)
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == local {
			return nil
		}
	}
	return fmt.Errorf("tap: --vxlan-local %s is not an address of this host; give one of its underlay addresses, or drop --vxlan-local to let the route choose", local)
}

// joinVXLAN creates or attaches the VXLAN device and puts it in the bridge
// br, recording how to undo each step. A created device is deleted at
// Close, taking its forwarding entries with it; an attached one only
// leaves the bridge (and goes down, if it was) and its forwarding entries
// are never written.
func (d *Device) joinVXLAN(h *netlink.Handle, p *vxlanPlan, br netlink.Link, mark string) error {
	l := p.dev
	if l == nil {
		var err error
		if l, err = d.createVXLAN(h, p, mark); err != nil {
			return err
		}
	}
	name := l.Attrs().Name
	brName, brIndex := br.Attrs().Name, br.Attrs().Index
	if l.Attrs().MasterIndex != brIndex {
		if err := h.LinkSetMasterByIndex(l, brIndex); err != nil {
			return devErr(name, "add to bridge "+brName, err)
		}
		if p.dev != nil {
			d.onClose(func() error { return wrapErr(name, "remove from bridge "+brName, h.LinkSetNoMaster(l)) })
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(l); err != nil {
			return devErr(name, "bring up", err)
		}
		if p.dev != nil {
			d.onClose(func() error { return wrapErr(name, "set down again", h.LinkSetDown(l)) })
		}
	}
	vx := &vxlanPort{name: name, index: l.Attrs().Index}
	copy(vx.mac[:], l.Attrs().HardwareAddr)
	d.vx = vx
	return nil
}

// createVXLAN adds the device with the plan's VNI, port, local address
// and MTU, and one all-zeros forwarding entry per peer: broadcast and
// unknown unicast go to every peer (head-end replication), and the device
// learns which peer each remote MAC sits behind from what it receives.
func (d *Device) createVXLAN(h *netlink.Handle, p *vxlanPlan, mark string) (netlink.Link, error) {
	name := p.cfg.CreatedName()
	vx := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: name, MTU: p.mtu, Alias: mark},
		VxlanId:   p.cfg.VNI,
		Port:      p.cfg.Port,
		Learning:  true,
		UDPCSum:   true,
	}
	if p.cfg.Local.IsValid() {
		vx.SrcAddr = net.IP(p.cfg.Local.AsSlice())
	}
	if err := h.LinkAdd(vx); err != nil {
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.EADDRINUSE) {
			return nil, fmt.Errorf("tap: create VXLAN device %s: %w; another VXLAN device already uses VNI %d on UDP port %d here: attach it with --vxlan-dev, or choose another --vxlan or --vxlan-port",
				name, err, p.cfg.VNI, p.cfg.Port)
		}
		return nil, devErr(name, "create VXLAN device (--vxlan)", err)
	}
	l, err := h.LinkByName(name)
	if err != nil {
		return nil, devErr(name, "look up the VXLAN device just created (remove it with ip link del "+name+")", err)
	}
	index := l.Attrs().Index
	d.onClose(func() error {
		l, err := h.LinkByIndex(index)
		if err != nil || l.Attrs().Name != name || l.Type() != "vxlan" {
			return nil // already gone
		}
		return wrapErr(name, "delete VXLAN device", h.LinkDel(l))
	})
	if err := d.markCreated(h, l, mark); err != nil {
		return nil, err
	}
	for _, r := range p.cfg.Remotes {
		err := h.NeighAppend(&netlink.Neigh{
			LinkIndex:    index,
			Family:       unix.AF_BRIDGE,
			Flags:        netlink.NTF_SELF,
			State:        netlink.NUD_NOARP | netlink.NUD_PERMANENT,
			HardwareAddr: make(net.HardwareAddr, 6),
			IP:           net.IP(r.AsSlice()),
		})
		if err != nil {
			return nil, devErr(name, "add peer "+r.String()+" (--vxlan-remote)", err)
		}
	}
	return l, nil
}
