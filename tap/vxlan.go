package tap

import (
	"fmt"
	"net/netip"
	"strconv"
)

// VXLAN stretches the TAP's segment to other hosts with the kernel's VXLAN
// device in a bridge with the TAP: the kernel encapsulates, vknetd only
// configures. Either the daemon creates the device (VNI, Remotes, Local,
// Port) or it attaches one that exists (Dev), such as one FRR's EVPN
// manages; an attached device's forwarding entries are never touched.
type VXLAN struct {
	// VNI is the VXLAN network identifier (--vxlan), 1 to 16777215. With
	// Dev it may be 0 (take the device's); otherwise it must match it.
	VNI int
	// Remotes are the peer hosts' underlay addresses (--vxlan-remote):
	// broadcast and unknown unicast is replicated to each (head-end
	// replication), as `bridge fdb append 00:00:00:00:00:00 dst ADDR`.
	Remotes []netip.Addr
	// Local is the underlay source address (--vxlan-local); the zero
	// Addr lets the kernel choose by route.
	Local netip.Addr
	// Port is the UDP destination port (--vxlan-port); 0 means 4789, the
	// IANA port (Linux's own default, 8472, is not what peers expect).
	Port int
	// Dev is an existing VXLAN device to attach (--vxlan-dev) instead of
	// creating one.
	Dev string
}

// DefaultVXLANPort is the IANA-assigned VXLAN port.
const DefaultVXLANPort = 4789

const maxVNI = 1<<24 - 1

// VXLAN's overhead on the underlay: outer Ethernet is not counted by the
// underlay's MTU, so an inner frame of MTU+14 bytes costs IP (20 or 40) +
// UDP (8) + VXLAN (8) + the inner Ethernet header (14).
const (
	vxlanOverhead4 = 50
	vxlanOverhead6 = 70
)

// vxlanPrefix and bridgePrefix name what the daemon creates for VNI N:
// "vkvxN" and, without -b, "vkbrN". The vk prefix keeps them apart from
// the vxlanN or vniN names other tools (ifupdown2, FRR recipes) use.
const (
	vxlanPrefix  = "vkvx"
	bridgePrefix = "vkbr"
)

// CreatedName is the name of the VXLAN device the daemon creates for vni.
func (v *VXLAN) CreatedName() string { return vxlanPrefix + strconv.Itoa(v.VNI) }

// DefaultBridge is the bridge the daemon creates for the TAP and the VXLAN
// device when -b is not given.
func DefaultBridge(vni int) string { return bridgePrefix + strconv.Itoa(vni) }

func (v *VXLAN) validate() error {
	if v.VNI < 0 || v.VNI > maxVNI || v.VNI == 0 && v.Dev == "" {
		return fmt.Errorf("tap: VNI %d (--vxlan) out of range; use 1 to %d", v.VNI, maxVNI)
	}
	if v.Port < 0 || v.Port > 65535 {
		return fmt.Errorf("tap: UDP port %d (--vxlan-port) out of range; use 1 to 65535 (VXLAN's is %d)", v.Port, DefaultVXLANPort)
	}
	if v.Dev != "" {
		if err := checkName("VXLAN device", "--vxlan-dev", v.Dev); err != nil {
			return err
		}
		if len(v.Remotes) > 0 || v.Local.IsValid() || v.Port != 0 {
			return fmt.Errorf("tap: --vxlan-dev %s attaches a device as it is configured; drop --vxlan-remote, --vxlan-local and --vxlan-port, or drop --vxlan-dev to have vknetd create one", v.Dev)
		}
		return nil
	}
	if len(v.Remotes) == 0 {
		return fmt.Errorf("tap: --vxlan %d has no peer: give each other host's underlay address with --vxlan-remote, or attach a device another tool manages with --vxlan-dev", v.VNI)
	}
	is6 := v.Remotes[0].Is6()
	seen := map[netip.Addr]bool{}
	for _, r := range v.Remotes {
		switch {
		case !r.IsValid() || r.IsUnspecified() || r.IsMulticast() || r.Is4In6():
			return fmt.Errorf("tap: --vxlan-remote %s is not a unicast address of a peer host", r)
		case r.Is6() != is6:
			return fmt.Errorf("tap: --vxlan-remote %s and %s: the peers must all be IPv4 or all IPv6", v.Remotes[0], r)
		case seen[r]:
			return fmt.Errorf("tap: --vxlan-remote %s is given twice", r)
		}
		seen[r] = true
	}
	if v.Local.IsValid() && (v.Local.Is6() != is6 || v.Local.IsUnspecified() || v.Local.IsMulticast()) {
		return fmt.Errorf("tap: --vxlan-local %s must be a unicast address of this host of the peers' family (they are %s)", v.Local, v.Remotes[0])
	}
	if v.Local.IsValid() && seen[v.Local] {
		return fmt.Errorf("tap: --vxlan-local %s is also given as --vxlan-remote: list only the other hosts", v.Local)
	}
	return nil
}

// overhead is what VXLAN adds on an underlay of the peers' family.
func (v *VXLAN) overhead() int {
	if len(v.Remotes) > 0 && v.Remotes[0].Is6() {
		return vxlanOverhead6
	}
	return vxlanOverhead4
}

// mtuError is the refusal when --mtu does not fit: it names what to raise
// and what --mtu to pass instead.
func mtuError(mtu int, what string, have, overhead int) error {
	fit := have - overhead
	if overhead == 0 {
		return fmt.Errorf("tap: --mtu %d does not fit %s, whose MTU is %d: raise its MTU to %d, or pass --mtu %d (guests must then use that MTU too)",
			mtu, what, have, mtu, fit)
	}
	return fmt.Errorf("tap: --mtu %d does not fit VXLAN over %s, whose MTU is %d: VXLAN adds %d bytes, so raise the underlay MTU to %d on every host and the path between them, or pass --mtu %d (guests must then use that MTU too)",
		mtu, what, have, overhead, mtu+overhead, fit)
}

// vxlanPort is the VXLAN device in the TAP's bridge, as the listings need
// it.
type vxlanPort struct {
	name  string
	index int
	mac   [6]byte
}

// VXLANDev is the VXLAN device in the TAP's bridge, "" without one.
func (d *Device) VXLANDev() string {
	if d.vx == nil {
		return ""
	}
	return d.vx.name
}

// RemoteMAC is a MAC address the bridge has learned behind the VXLAN
// device: a guest on another host.
type RemoteMAC struct {
	MAC  [6]byte
	Dev  string     // the VXLAN device
	VTEP netip.Addr // the peer host it sits behind, when the device knows
}

// RemoteCounters are the VXLAN device's own counters: what came from and
// went to the other hosts. A frame flooded to N peers counts N times in
// TxFrames (head-end replication sends N copies).
type RemoteCounters struct {
	RxFrames, RxBytes, TxFrames, TxBytes uint64
}
