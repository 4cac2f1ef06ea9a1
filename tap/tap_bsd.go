//go:build dragonfly || freebsd

package tap

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The BSDs configure interfaces with ioctls whose structures differ between
// DragonFly and FreeBSD (and between FreeBSD releases); ifconfig(8) is the
// stable interface to them, and Open runs only once per daemon.
const ifconfigPath = "/sbin/ifconfig"

// osDevice holds nothing on the BSDs: ifconfig(8) needs no handle.
type osDevice struct{}

// Open opens the tap(4) device named by cfg, or a fresh one from the
// cloning device /dev/tap, and configures it with ifconfig(8).
func Open(cfg Config) (*Device, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.VXLAN != nil {
		// vxlan(4) exists on FreeBSD and DragonFly, but its configuration
		// (ifconfig vxlanid/vxlanremote, one peer per interface) is not
		// done here yet.
		return nil, errors.New("tap: --vxlan is supported on Linux only; on this system create a vxlan(4) interface with ifconfig and add it to the bridge (-b) yourself")
	}
	d := &Device{fd: -1}
	existed, err := d.attach(cfg.Name)
	if err != nil {
		return nil, d.rollback(err)
	}
	if err := d.configure(cfg, existed); err != nil {
		return nil, d.rollback(err)
	}
	// The address stays on the TAP here, as before: older if_bridge(4)
	// delivers to a member's address, but FreeBSD 15 refuses addresses on
	// members by default (net.link.bridge.member_ifaddrs), so with -b the
	// address should move to the bridge as on Linux; not done (untested).
	d.mtu, d.hostMAC, d.bridge = cfg.MTU, d.mac, cfg.Bridge
	return d, nil
}

func (d *Device) attach(name string) (existed bool, err error) {
	path := "/dev/tap"
	if name != "" {
		path = "/dev/" + name
		if _, err := net.InterfaceByName(name); err == nil {
			existed = true
			if _, err := os.Stat(path); err != nil {
				return false, fmt.Errorf("tap: interface %s (-t) exists but has no %s, so it is not a tap(4) interface; choose another name", name, path)
			}
		}
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT) && name == "":
			return false, fmt.Errorf("tap: open %s: %w; load the tap driver (%s)", path, err, loadDriverHint)
		case errors.Is(err, unix.ENOENT):
			return false, fmt.Errorf("tap: open %s: %w; tap interfaces are named tapN (-t), and the tap driver must be loaded (%s)", path, err, loadDriverHint)
		case errors.Is(err, unix.EBUSY):
			return false, fmt.Errorf("tap: open %s: %w; another process has it open, stop it or choose another name (-t)", path, err)
		case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
			return false, fmt.Errorf("tap: open %s: %w; needs root", path, err)
		}
		return false, fmt.Errorf("tap: open %s: %w", path, err)
	}
	ifname, err := tapName(fd)
	if err != nil {
		unix.Close(fd)
		return false, fmt.Errorf("tap: %s: cannot learn the interface name: %w", path, err)
	}
	d.name = ifname
	d.fd = fd
	d.onClose(func() error {
		err := unix.Close(fd)
		if err != nil {
			err = fmt.Errorf("tap: %s: close: %w", ifname, err)
		}
		if existed || !destroyOnClose {
			return err
		}
		if _, ierr := net.InterfaceByName(ifname); ierr == nil {
			err = errors.Join(err, ifconfig(ifname, "destroy"))
		}
		return err
	})

	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return existed, fmt.Errorf("tap: %s: %w", ifname, err)
	}
	// A tun(4) device also has a /dev node and a name; only a tap carries
	// Ethernet frames, and only it has a MAC address.
	if len(iface.HardwareAddr) != len(d.mac) {
		return existed, fmt.Errorf("tap: %s (-t) is not a tap(4) Ethernet interface; choose a tapN", ifname)
	}
	copy(d.mac[:], iface.HardwareAddr)
	return existed, nil
}

func (d *Device) configure(cfg Config, existed bool) error {
	iface, err := net.InterfaceByName(d.name)
	if err != nil {
		return fmt.Errorf("tap: %s: %w", d.name, err)
	}

	if cfg.MTU != 0 && cfg.MTU != iface.MTU {
		if err := ifconfig(d.name, "mtu", strconv.Itoa(cfg.MTU)); err != nil {
			return err
		}
		if existed {
			prior := strconv.Itoa(iface.MTU)
			d.onClose(func() error { return ifconfig(d.name, "mtu", prior) })
		}
	}

	if cfg.Prefix.IsValid() && !hasAddr(iface, cfg) {
		family := "inet"
		if cfg.Prefix.Addr().Is6() {
			family = "inet6"
		}
		// "alias" adds; without it ifconfig would replace the TAP's first
		// address, which a pre-existing TAP may need.
		if err := ifconfig(d.name, family, cfg.Prefix.String(), "alias"); err != nil {
			return err
		}
		if existed {
			addr := cfg.Prefix.Addr().String()
			d.onClose(func() error { return ifconfig(d.name, family, addr, "-alias") })
		}
	}

	if iface.Flags&net.FlagUp == 0 {
		if err := ifconfig(d.name, "up"); err != nil {
			return err
		}
		if existed {
			d.onClose(func() error { return ifconfig(d.name, "down") })
		}
	}

	if cfg.Bridge != "" {
		return d.joinBridge(cfg.Bridge)
	}
	return nil
}

func hasAddr(iface *net.Interface, cfg Config) bool {
	addrs, err := iface.Addrs()
	if err != nil {
		return false
	}
	want := cfg.Prefix.Addr()
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ones, _ := n.Mask.Size()
		if got, ok := netip.AddrFromSlice(n.IP); ok && got.Unmap() == want && ones == cfg.Prefix.Bits() {
			return true
		}
	}
	return false
}

func (d *Device) joinBridge(bridge string) error {
	br, err := net.InterfaceByName(bridge)
	created := false
	if err != nil {
		if err := ifconfig(bridge, "create"); err != nil {
			return fmt.Errorf("%w; bridges are named bridgeN (-b)", err)
		}
		created = true
		d.onClose(func() error { return ifconfig(bridge, "destroy") })
		if br, err = net.InterfaceByName(bridge); err != nil {
			return fmt.Errorf("tap: bridge %s: %w", bridge, err)
		}
	}

	member, err := isMember(bridge, d.name)
	if err != nil {
		return err
	}
	if !member {
		if err := ifconfig(bridge, "addm", d.name); err != nil {
			return err
		}
		// Detach even a TAP created here: DragonFly keeps its
		// preallocated tap0-tap3 after the descriptor is closed.
		if !created {
			d.onClose(func() error { return ifconfig(bridge, "deletem", d.name) })
		}
	}

	if br.Flags&net.FlagUp == 0 {
		if err := ifconfig(bridge, "up"); err != nil {
			return err
		}
		if !created {
			d.onClose(func() error { return ifconfig(bridge, "down") })
		}
	}
	return nil
}

// isMember reads the bridge's member list from ifconfig's report, which
// prints one "member: NAME flags=..." line per port on both systems.
func isMember(bridge, name string) (bool, error) {
	out, err := exec.Command(ifconfigPath, bridge).CombinedOutput()
	if err != nil {
		return false, fmt.Errorf("tap: ifconfig %s: %w: %s", bridge, err, bytes.TrimSpace(out))
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "member:" && f[1] == name {
			return true, nil
		}
	}
	return false, nil
}

func ifconfig(args ...string) error {
	out, err := exec.Command(ifconfigPath, args...).CombinedOutput()
	if err != nil {
		msg := string(bytes.TrimSpace(out))
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			msg = ifconfigPath + " is missing"
		}
		return fmt.Errorf("tap: ifconfig %s: %w: %s", strings.Join(args, " "), err, msg)
	}
	return nil
}
