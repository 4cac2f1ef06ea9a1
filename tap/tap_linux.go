package tap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// osDevice is what a Linux Device keeps besides the shared fields: the
// rtnetlink handle Open made, for Close and the VXLAN listings.
type osDevice struct {
	h        *netlink.Handle
	tapIndex int // the TAP's ifindex
	// pinned are the MACs PinLocal holds on the TAP's bridge port (see
	// pin_linux.go).
	pinned map[[6]byte]bool
}

// tunPath is the TUN/TAP clone device; a variable so a test can point it at
// a missing path.
var tunPath = "/dev/net/tun"

// Open creates or attaches the TAP named by cfg and configures it. The TAP
// and everything else Open touches live in the network namespace of the
// calling thread: a caller working in another namespace must lock its OS
// thread there for the duration of Open.
//
// The order is the one that lets every refusal come before any change: the
// VXLAN plan (device, underlay MTU) is read first; then the TAP, its bridge,
// the VXLAN device, and last the host's address, on the bridge when there
// is one.
func Open(cfg Config) (*Device, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// One handle, bound to the namespace Open runs in, serves Close and
	// the listings too, whichever thread they run on.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("tap: open rtnetlink socket: %w", err)
	}
	d := &Device{fd: -1, os: osDevice{h: h}}
	d.onClose(func() error { h.Close(); return nil })

	var plan *vxlanPlan
	if cfg.VXLAN != nil {
		if plan, err = planVXLAN(h, cfg); err != nil {
			return nil, d.rollback(err)
		}
		if plan.mtu < cfg.MTU {
			d.mtuNote = fitNote(cfg.MTU, plan.mtu, plan)
		}
		cfg.MTU = plan.mtu
		if cfg.Bridge == "" {
			cfg.Bridge = plan.bridge
		}
	}
	// What a daemon killed before Close left goes now, so that this Open
	// creates its own devices afresh (see Config.Mark).
	if plan != nil && plan.leftover {
		if err := removeLeftover(h, plan.cfg.CreatedName(), "vxlan", cfg.Mark); err != nil {
			return nil, d.rollback(err)
		}
	}
	if err := removeLeftover(h, cfg.Bridge, "bridge", cfg.Mark); err != nil {
		return nil, d.rollback(err)
	}
	if cfg.Name != "" {
		if err := refuseNonTAP(h, cfg.Name); err != nil {
			return nil, d.rollback(err)
		}
	}
	existed, err := d.attach(h, cfg.Name, cfg.Offload, cfg.USO)
	if err != nil {
		return nil, d.rollback(err)
	}
	d.existed, d.prefix = existed, cfg.Prefix // for a successor (adopt_linux.go)
	link, priorMaster, err := d.configure(h, cfg, existed)
	if err != nil {
		return nil, d.rollback(err)
	}
	d.mtu, d.hostMAC = cfg.MTU, d.mac
	host := link // where the host's address goes
	if cfg.Bridge != "" {
		br, err := d.joinBridge(h, link, priorMaster, cfg.Bridge, existed, cfg.Mark)
		if err != nil {
			return nil, d.rollback(err)
		}
		if plan != nil {
			if err := d.joinVXLAN(h, plan, br, cfg.Mark); err != nil {
				return nil, d.rollback(err)
			}
		}
		// Read after every port has joined: a bridge without an address
		// of its own set takes the lowest of its ports'.
		if br, err = h.LinkByIndex(br.Attrs().Index); err != nil {
			return nil, d.rollback(devErr(cfg.Bridge, "look up bridge", err))
		}
		copy(d.hostMAC[:], br.Attrs().HardwareAddr)
		d.bridge, host = cfg.Bridge, br
	}
	if cfg.Prefix.IsValid() {
		// A TAP created here takes its address with it; anything that
		// stays must lose it at Close.
		undo := existed || host != link
		if err := d.addAddress(h, host, cfg.Prefix, undo); err != nil {
			return nil, d.rollback(err)
		}
	}
	return d, nil
}

// refuseNonTAP fails when name exists and is anything but a TAP, before
// TUNSETIFF can fail with a bare EINVAL.
func refuseNonTAP(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		return nil
	case err != nil:
		return devErr(name, "look up interface", err)
	case isTAP(l):
		return nil
	}
	kind := l.Type() + " device"
	if tt, ok := l.(*netlink.Tuntap); ok {
		kind = tt.Mode.String() + " (layer 3) device"
	}
	if l.Type() == "device" { // netlink's name for a link without a kind: lo, physical NICs
		kind = "physical or loopback interface"
	}
	return fmt.Errorf("tap: interface %s (-t) exists and is a %s, not a TAP; choose another name for -t", name, kind)
}

func isTAP(l netlink.Link) bool {
	tt, ok := l.(*netlink.Tuntap)
	return ok && tt.Mode == netlink.TUNTAP_MODE_TAP
}

// attach opens the clone device and binds it to name (or a kernel-chosen
// tapN). It reports whether the TAP existed before, which decides whether
// Close deletes it or restores it.
func (d *Device) attach(h *netlink.Handle, name string, offload, uso bool) (existed bool, err error) {
	var fd int
	var ifr *unix.Ifreq
	if offload {
		fd, ifr, err = openTun(name, true)
		if err == nil {
			d.uso, err = setOffload(fd, uso)
			if err != nil {
				unix.Close(fd)
			}
		}
		if err == nil {
			d.vnetHdr = true
		} else {
			// A TAP someone else set up may refuse the change; the switch
			// works without offloads, one frame per read and write.
			d.offloadNote = fmt.Sprintf("TAP offloads unavailable, frames cross the TAP one by one: %v", err)
		}
	}
	if !d.vnetHdr {
		if fd, ifr, err = openTun(name, false); err != nil {
			return false, err
		}
	}
	d.name = ifr.Name()

	// A TAP that was there before attaching is necessarily persistent: a
	// non-persistent one exists only while a descriptor is attached, and a
	// single-queue TAP takes only one (TUNSETIFF said EBUSY above).
	got, err := unix.NewIfreq(d.name)
	if err == nil {
		err = unix.IoctlIfreq(fd, unix.TUNGETIFF, got)
	}
	if err != nil {
		unix.Close(fd)
		return false, devErr(d.name, "TUNGETIFF", err)
	}
	existed = got.Uint16()&unix.IFF_PERSIST != 0

	d.fd = fd
	ifindex := 0
	d.onClose(func() error {
		err := unix.Close(fd)
		if err != nil {
			err = devErr(d.name, "close", err)
		}
		if existed || ifindex == 0 {
			return err
		}
		// A TAP created here vanishes with its last descriptor; a copy
		// inherited by a child that has not exec'd yet would keep it
		// alive, so make sure.
		l, lerr := h.LinkByIndex(ifindex)
		if lerr == nil && l.Attrs().Name == d.name && isTAP(l) {
			if derr := h.LinkDel(l); derr != nil {
				err = errors.Join(err, devErr(d.name, "delete", derr))
			}
		}
		return err
	})

	l, err := h.LinkByName(d.name)
	if err != nil {
		return existed, devErr(d.name, "look up interface", err)
	}
	ifindex = l.Attrs().Index
	d.os.tapIndex = ifindex
	copy(d.mac[:], l.Attrs().HardwareAddr)
	return existed, nil
}

// openTun opens the clone device and binds it to name (or a kernel-chosen
// tapN), with a virtio_net_hdr before every frame when vnet is set.
func openTun(name string, vnet bool) (int, *unix.Ifreq, error) {
	fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			return -1, nil, fmt.Errorf("tap: open %s: %w; load the TUN/TAP driver (modprobe tun)", tunPath, err)
		}
		return -1, nil, devErr(tunPath, "open", err)
	}
	req := name
	if req == "" {
		req = "tap%d" // the kernel replaces %d with the lowest free number
	}
	ifr, err := unix.NewIfreq(req)
	if err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("tap: interface name %q: %w", req, err)
	}
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if vnet {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		shown := name
		if shown == "" {
			shown = "new TAP"
		}
		switch {
		case errors.Is(err, unix.EBUSY):
			return -1, nil, fmt.Errorf("tap: %s: TUNSETIFF: %w; another process has it open, stop it or choose another name (-t)", shown, err)
		case errors.Is(err, unix.EINVAL):
			return -1, nil, fmt.Errorf("tap: %s: TUNSETIFF: %w; it exists with settings a single-queue TAP cannot attach to (multi-queue?), remove it (ip link del %s) or choose another name (-t)",
				shown, err, shown)
		}
		return -1, nil, devErr(shown, "TUNSETIFF", err)
	}
	return fd, ifr, nil
}

// The tun driver's offload bits (include/uapi/linux/if_tun.h).
const (
	tunFCsum = 0x01
	tunFTSO4 = 0x02
	tunFTSO6 = 0x04
	tunFUSO4 = 0x20 // Linux 6.2+
	tunFUSO6 = 0x40
)

// setOffload makes the TAP's virtio_net_hdr 10 bytes (gso.HdrSize) and
// lets the host's stack hand over TCP superframes of up to 64 KiB and
// frames with a partial checksum; with uso, UDP superframes (UDP_SEGMENT)
// too where the kernel has them (it reports whether).
func setOffload(fd int, uso bool) (usoOn bool, err error) {
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, VnetHdrSize); err != nil {
		return false, fmt.Errorf("TUNSETVNETHDRSZ: %w", err)
	}
	const tso = tunFCsum | tunFTSO4 | tunFTSO6
	if uso && unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tso|tunFUSO4|tunFUSO6) == nil {
		return true, nil
	}
	// Before 6.2 the kernel refuses the USO bits (EINVAL): TSO alone.
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tso); err != nil {
		return false, fmt.Errorf("TUNSETOFFLOAD: %w", err)
	}
	return false, nil
}

// configure sets the TAP's MTU and up state. For a TAP that existed it
// records how to put each one back; a TAP created here needs none of that,
// it disappears with its descriptor. It returns the TAP and the master it
// had.
func (d *Device) configure(h *netlink.Handle, cfg Config, existed bool) (netlink.Link, int, error) {
	link, err := h.LinkByName(d.name)
	if err != nil {
		return nil, 0, devErr(d.name, "look up interface", err)
	}
	prior := *link.Attrs()

	if cfg.MTU != 0 && cfg.MTU != prior.MTU {
		if err := h.LinkSetMTU(link, cfg.MTU); err != nil {
			return nil, 0, devErr(d.name, fmt.Sprintf("set MTU %d (--mtu)", cfg.MTU), err)
		}
		if existed {
			d.onClose(func() error {
				return wrapErr(d.name, fmt.Sprintf("restore MTU %d", prior.MTU), h.LinkSetMTU(link, prior.MTU))
			})
		}
	}

	if prior.Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return nil, 0, devErr(d.name, "bring up", err)
		}
		if existed {
			d.onClose(func() error { return wrapErr(d.name, "set down again", h.LinkSetDown(link)) })
		}
	}
	return link, prior.MasterIndex, nil
}

// addAddress puts the host's address on link (the TAP, or its bridge). An
// address someone else configured already stays theirs at Close.
func (d *Device) addAddress(h *netlink.Handle, link netlink.Link, p netip.Prefix, undo bool) error {
	name := link.Attrs().Name
	err := h.AddrAdd(link, &netlink.Addr{IPNet: ipNet(p)})
	switch {
	case errors.Is(err, unix.EEXIST):
		return nil
	case err != nil:
		return devErr(name, "add address "+p.String(), err)
	case undo:
		d.onClose(func() error {
			return wrapErr(name, "remove address "+p.String(), h.AddrDel(link, &netlink.Addr{IPNet: ipNet(p)}))
		})
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	a := p.Addr()
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
}

// devErr names the device and the step, keeps the errno reachable with
// errors.Is, and says what to do about the errors a user can fix.
func devErr(dev, op string, err error) error {
	hint := ""
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		hint = "; needs root or CAP_NET_ADMIN"
	}
	return fmt.Errorf("tap: %s: %s: %w%s", dev, op, err, hint)
}

func wrapErr(dev, op string, err error) error {
	if err == nil {
		return nil
	}
	return devErr(dev, op, err)
}
