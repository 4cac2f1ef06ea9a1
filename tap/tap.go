// Package tap opens and configures the switch's TAP port: it creates or
// attaches a layer-2 TAP interface, gives it an address, an MTU and optionally
// a bridge, and hands the engine a raw non-blocking file descriptor.
//
// The descriptor is deliberately not wrapped in an os.File: the engine polls
// it in its own epoll/kqueue loop with plain read(2)/write(2), and an os.File
// would register it with Go's netpoller as well.
//
// Everything Open changes is recorded and undone by Close: a TAP or bridge
// the daemon created is removed, one that existed before is put back as it
// was found. Open undoes its own partial work when a later step fails.
//
// Linux support lives in tap_linux.go (netlink), DragonFly and FreeBSD
// support in tap_bsd.go (ifconfig(8)).
package tap

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
)

// Config says which TAP to use and how to configure it.
type Config struct {
	// Name is the TAP interface to use or create (-t). Empty lets the
	// kernel pick a free tapN.
	Name string
	// MTU is the TAP's MTU (--mtu). Zero leaves the MTU as it is.
	MTU int
	// Prefix is the address and prefix length to put on the TAP
	// (address/cidrbits). The zero Prefix configures no address.
	Prefix netip.Prefix
	// Bridge is a bridge to add the TAP to, created if missing (-b).
	// Empty means no bridge, unless VXLAN asks for one. With a bridge the
	// address goes on the bridge, not the TAP: Linux delivers nothing to
	// the address of a bridge port.
	Bridge string
	// FitMTU lets Open lower MTU to what the VXLAN underlay carries
	// (--mtu left at its default); without it Open refuses a VXLAN that
	// cannot carry MTU, saying what to raise.
	FitMTU bool
	// VXLAN, when set, joins a VXLAN device to the TAP's bridge (Linux
	// only): see VXLAN.
	VXLAN *VXLAN
	// Offload asks for the TAP's offloads (Linux only): every read and
	// write carries a virtio_net_hdr of VnetHdrSize bytes, and the host
	// may hand over TCP superframes of up to 64 KiB and frames whose
	// checksum is left to finish (NEEDS_CSUM). A TAP that refuses them is
	// used without; Device.VnetHdr says which, Device.OffloadNote why.
	// Ignored on the BSDs.
	Offload bool
	// USO, with Offload, also lets the host hand over UDP superframes
	// (UDP_SEGMENT, TUN_F_USO4/6) where the kernel has them (6.2+;
	// Device.USO says): only for a reader that cuts them or passes them
	// on to a peer that negotiated them.
	USO bool
	// Mark, when set, is the alias (IFLA_IFALIAS) every device Open
	// creates is given (Linux: the bridge and the VXLAN device; the TAP
	// vanishes with its descriptor anyway). A daemon killed before Close
	// leaves them behind; a later Open with the same Mark knows them as
	// its own leftovers and removes them before creating its own, and
	// never touches a device of the same name without the Mark. The
	// daemon marks with its pidfile's path, which the pidfile's lock keeps
	// to one daemon at a time. At most MaxMarkLen bytes.
	Mark string
}

// MaxMarkLen is the longest Config.Mark: an interface alias (IFALIASZ-1).
const MaxMarkLen = 255

// VnetHdrSize is the virtio_net_hdr before every frame of a TAP with
// offloads (TUNSETVNETHDRSZ): gso.HdrSize, without num_buffers.
const VnetHdrSize = 10

// MTU limits shared by Linux's tun driver (68..65535); IPv4 cannot work
// below 68 bytes.
const (
	minMTU = 68
	maxMTU = 65535
)

// maxNameLen is IFNAMSIZ-1: interface names are NUL-terminated 16-byte
// arrays on Linux and the BSDs alike.
const maxNameLen = 15

func (c *Config) validate() error {
	if err := checkName("TAP", "-t", c.Name); err != nil {
		return err
	}
	if err := checkName("bridge", "-b", c.Bridge); err != nil {
		return err
	}
	if c.Bridge != "" && c.Bridge == c.Name {
		return fmt.Errorf("tap: bridge %q (-b) is the TAP's own name (-t); give the bridge another name", c.Bridge)
	}
	if c.MTU != 0 && (c.MTU < minMTU || c.MTU > maxMTU) {
		return fmt.Errorf("tap: MTU %d (--mtu) out of range; use %d to %d", c.MTU, minMTU, maxMTU)
	}
	if len(c.Mark) > MaxMarkLen {
		return fmt.Errorf("tap: device mark %q is %d bytes, longer than an interface alias may be (%d)", c.Mark, len(c.Mark), MaxMarkLen)
	}
	if c.VXLAN != nil {
		if err := c.VXLAN.validate(); err != nil {
			return err
		}
	}
	if c.Prefix.IsValid() {
		a := c.Prefix.Addr()
		if a.Is4In6() {
			return fmt.Errorf("tap: address %s is an IPv4-mapped IPv6 address; write it as plain IPv4 (%s/%d)",
				c.Prefix, a.Unmap(), c.Prefix.Bits()-96)
		}
		if c.Prefix.Bits() == 0 {
			// A /0 on the TAP would add a route to every address through it.
			return fmt.Errorf("tap: address %s has prefix length 0; give the subnet's length, e.g. %s/24", c.Prefix, a)
		}
	}
	return nil
}

// checkName applies the kernel's rules for interface names (Linux
// dev_valid_name; the BSDs accept a subset) so a bad name is refused before
// anything is created. '%' is refused too: Linux would treat it as a
// template and pick a different name than the one asked for.
func checkName(what, flag, name string) error {
	switch {
	case name == "":
		return nil
	case len(name) > maxNameLen:
		return fmt.Errorf("tap: %s name %q (%s) is %d bytes, longer than the kernel's limit of %d; choose a shorter name",
			what, name, flag, len(name), maxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("tap: %s name %q (%s) is not a valid interface name", what, name, flag)
	case strings.ContainsAny(name, "/:% \t\n\v\f\r"):
		return fmt.Errorf("tap: %s name %q (%s) contains '/', ':', '%%' or white space, which interface names cannot", what, name, flag)
	}
	return nil
}

// Device is an open, configured TAP port.
type Device struct {
	name string
	fd   int
	mac  [6]byte
	mtu  int

	// hostMAC is the MAC the host answers from: the bridge's when the TAP
	// is in one, else the TAP's own.
	hostMAC [6]byte
	bridge  string
	vx      *vxlanPort // nil without VXLAN
	os      osDevice
	// mtuNote says why the MTU is below Config.MTU (FitMTU), "" if not.
	mtuNote string
	// vnetHdr: the fd carries a virtio_net_hdr before every frame, with
	// offloads on; offloadNote says why not when they were asked for.
	vnetHdr     bool
	offloadNote string
	uso         bool // the host may hand over UDP superframes too

	// created are the devices Open created and marked (Config.Mark),
	// which Close deletes; a keeper deletes them too if the daemon dies.
	created []Created
	// existed: the TAP was there before Open (persistent); prefix is the
	// host's address Open set. A successor daemon needs both (Export).
	existed bool
	prefix  netip.Prefix

	mu     sync.Mutex
	closed bool
	// undo holds the reversal of every change Open made, in the order the
	// changes were made; Close runs it backwards.
	undo []func() error
}

// Name is the TAP interface's name, e.g. "tap0".
func (d *Device) Name() string { return d.name }

// Fd is the TAP's descriptor: non-blocking and close-on-exec, one Ethernet
// frame (no packet-information header) per read or write. It belongs to the
// Device: stop polling it before calling Close. After Close it is -1.
func (d *Device) Fd() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return -1
	}
	return d.fd
}

// VnetHdr reports whether every read and write on Fd carries a
// virtio_net_hdr of VnetHdrSize bytes before the frame, with TSO and
// checksum offload negotiated (Config.Offload, Linux).
func (d *Device) VnetHdr() bool { return d.vnetHdr }

// OffloadNote says why offloads were asked for and are off, "" otherwise.
func (d *Device) OffloadNote() string { return d.offloadNote }

// USO reports whether the host may hand over UDP superframes (Config.USO
// asked for it and the kernel has it).
func (d *Device) USO() bool { return d.uso }

// MAC is the TAP interface's own hardware address.
func (d *Device) MAC() [6]byte { return d.mac }

// HostMAC is the host's side of the port, the MAC its address answers
// from: the bridge's when the TAP is in one (-b, --vxlan), else the TAP's.
// Secure mode reserves it.
func (d *Device) HostMAC() [6]byte { return d.hostMAC }

// MTU is the TAP's MTU as Open left it: Config.MTU, or less when FitMTU
// let Open fit it to the VXLAN underlay; 0 when Config.MTU was 0.
func (d *Device) MTU() int { return d.mtu }

// MTUNote says, when FitMTU lowered the MTU, what bounded it and what to
// raise; "" when the MTU is Config.MTU.
func (d *Device) MTUNote() string { return d.mtuNote }

// Bridge is the bridge the TAP is in, "" when none.
func (d *Device) Bridge() string { return d.bridge }

// Created is a device Open created besides the TAP, as RemoveCreated
// needs it.
type Created struct {
	Name  string
	Index int
	Mark  string // Config.Mark, its alias
}

// Created lists the devices Open created and marked (Config.Mark): the
// bridge and the VXLAN device it made, in the order made. A process that
// outlives the daemon (the keeper) removes them with RemoveCreated if the
// daemon is killed before Close.
func (d *Device) Created() []Created { return d.created }

// Close closes the descriptor and undoes what Open changed: it removes a TAP
// or bridge Open created and restores the address, MTU, up/down state and
// bridge membership of a TAP and bridge that existed before. Every step is
// attempted even when an earlier one fails; the errors are joined. Calling
// Close again does nothing and returns nil.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	var errs []error
	for i := len(d.undo) - 1; i >= 0; i-- {
		if err := d.undo[i](); err != nil {
			errs = append(errs, err)
		}
	}
	d.undo = nil
	return errors.Join(errs...)
}

// onClose records how to reverse a change just made.
func (d *Device) onClose(f func() error) { d.undo = append(d.undo, f) }

// rollback is Open's way out after a failed step: it undoes what was done
// and returns the step's error with any clean-up failures attached.
func (d *Device) rollback(err error) error {
	if cerr := d.Close(); cerr != nil {
		return fmt.Errorf("%w (clean-up also failed: %v)", err, cerr)
	}
	return err
}
