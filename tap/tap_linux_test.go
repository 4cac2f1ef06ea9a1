package tap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// All addresses come from 198.18.0.0/15, the benchmarking range.
var (
	tapPrefix = netip.MustParsePrefix("198.18.0.1/24")
	peerIP    = netip.MustParseAddr("198.18.0.2")
	peerMAC   = [6]byte{0x02, 0x00, 0x5e, 0x10, 0x00, 0x02} // locally administered
	broadcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

func openTAP(t *testing.T, cfg Config) *Device {
	t.Helper()
	d, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open(%+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

func isUp(l netlink.Link) bool { return l.Attrs().Flags&net.FlagUp != 0 }

func TestOpenKernelPicksFreeTapN(t *testing.T) {
	n := enterNetns(t)
	// Occupy tap0 so the kernel has to pick another number, and check the
	// persistent TAP is left alone.
	n.ip(t, "tuntap", "add", "dev", "tap0", "mode", "tap")

	d := openTAP(t, Config{MTU: 1500, Prefix: tapPrefix})
	if !regexp.MustCompile(`^tap[0-9]+$`).MatchString(d.Name()) || d.Name() == "tap0" {
		t.Fatalf("Name() = %q, want a free tapN other than tap0", d.Name())
	}
	l := n.link(t, d.Name())
	if !isTAP(l) {
		t.Errorf("%s is %s, want a tuntap in tap mode", d.Name(), l.Type())
	}
	if !isUp(l) {
		t.Errorf("%s is down, want up", d.Name())
	}
	if l.Attrs().MTU != 1500 {
		t.Errorf("MTU %d, want 1500", l.Attrs().MTU)
	}
	if got := n.v4Addrs(t, l); !slices.Equal(got, []string{"198.18.0.1/24"}) {
		t.Errorf("addresses %v, want [198.18.0.1/24]", got)
	}
	mac := d.MAC()
	if !bytes.Equal(mac[:], l.Attrs().HardwareAddr) || mac == [6]byte{} {
		t.Errorf("MAC() = %x, link has %s", mac, l.Attrs().HardwareAddr)
	}

	fd := d.Fd()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Errorf("fd flags %#x (%v), want O_NONBLOCK", fl, err)
	}
	fdfl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil || fdfl&unix.FD_CLOEXEC == 0 {
		t.Errorf("fd flags %#x (%v), want FD_CLOEXEC", fdfl, err)
	}

	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	n.gone(t, d.Name())
	n.link(t, "tap0")
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if d.Fd() != -1 {
		t.Errorf("Fd() after Close = %d, want -1", d.Fd())
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		t.Errorf("old fd %d still open after Close (fcntl: %v)", fd, err)
	}
}

func TestOpenGivenName(t *testing.T) {
	n := enterNetns(t)
	d := openTAP(t, Config{Name: "vkt-tap1", MTU: 9000})
	if d.Name() != "vkt-tap1" {
		t.Fatalf("Name() = %q, want vkt-tap1", d.Name())
	}
	l := n.link(t, "vkt-tap1")
	if !isTAP(l) || !isUp(l) || l.Attrs().MTU != 9000 {
		t.Errorf("%s: type %s up %v MTU %d, want a TAP, up, MTU 9000", l.Attrs().Name, l.Type(), isUp(l), l.Attrs().MTU)
	}
	if got := n.v4Addrs(t, l); len(got) != 0 {
		t.Errorf("addresses %v, want none (no Prefix)", got)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	n.gone(t, "vkt-tap1")
}

func TestFrameFromFdReachesKernel(t *testing.T) {
	n := enterNetns(t)
	d := openTAP(t, Config{Prefix: tapPrefix})
	ps := packetSocket(t, n.link(t, d.Name()).Attrs().Index)

	frame := testFrame(broadcast, peerMAC, "fd to kernel")
	if _, err := unix.Write(d.Fd(), frame); err != nil {
		t.Fatalf("write to TAP fd: %v", err)
	}
	got := readMatching(t, ps, "packet socket", func(f []byte) bool { return bytes.Contains(f, []byte("fd to kernel")) })
	if !bytes.Equal(got, frame) {
		t.Errorf("kernel saw\n%x\nwant\n%x", got, frame)
	}
}

func TestFrameFromKernelReachesFd(t *testing.T) {
	n := enterNetns(t)
	d := openTAP(t, Config{Prefix: tapPrefix})
	ifindex := n.link(t, d.Name()).Attrs().Index
	ps := packetSocket(t, ifindex)

	frame := testFrame(peerMAC, d.MAC(), "kernel to fd")
	to := &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6, Protocol: htons(0x88b5)}
	copy(to.Addr[:], peerMAC[:])
	if err := unix.Sendto(ps, frame, 0, to); err != nil {
		t.Fatalf("send on packet socket: %v", err)
	}
	got := readMatching(t, d.Fd(), "TAP fd", func(f []byte) bool { return bytes.Contains(f, []byte("kernel to fd")) })
	if !bytes.Equal(got, frame) {
		t.Errorf("fd read\n%x\nwant\n%x", got, frame)
	}
}

// TestARPRoundTrip drives the host's own IP stack through the fd: a
// datagram to a neighbour on the TAP's subnet makes the kernel ask for its
// MAC on the fd; the answer written to the fd releases the datagram, which
// then arrives on the fd addressed to the answered MAC.
func TestARPRoundTrip(t *testing.T) {
	enterNetns(t)
	d := openTAP(t, Config{Prefix: tapPrefix})
	tapMAC := d.MAC()

	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	if err := unix.Sendto(s, []byte("vknetd tap test"), 0, &unix.SockaddrInet4{Port: 9, Addr: peerIP.As4()}); err != nil {
		t.Fatalf("send UDP to %s: %v", peerIP, err)
	}

	req := readMatching(t, d.Fd(), "TAP fd", func(f []byte) bool {
		return len(f) >= 42 && binary.BigEndian.Uint16(f[12:]) == unix.ETH_P_ARP &&
			binary.BigEndian.Uint16(f[20:]) == 1 && netip.AddrFrom4([4]byte(f[38:42])) == peerIP
	})
	if [6]byte(req[0:6]) != broadcast || [6]byte(req[6:12]) != tapMAC || [6]byte(req[22:28]) != tapMAC {
		t.Errorf("ARP request %x: want broadcast from the TAP's MAC %x", req[:42], tapMAC)
	}
	if sender := netip.AddrFrom4([4]byte(req[28:32])); sender != tapPrefix.Addr() {
		t.Errorf("ARP request asks on behalf of %s, want %s", sender, tapPrefix.Addr())
	}

	reply := make([]byte, 60)
	copy(reply[0:], tapMAC[:])
	copy(reply[6:], peerMAC[:])
	binary.BigEndian.PutUint16(reply[12:], unix.ETH_P_ARP)
	copy(reply[14:], []byte{0, 1, 8, 0, 6, 4, 0, 2}) // Ethernet/IPv4, reply
	copy(reply[22:], peerMAC[:])
	peer4 := peerIP.As4()
	copy(reply[28:], peer4[:])
	copy(reply[32:], tapMAC[:])
	tap4 := tapPrefix.Addr().As4()
	copy(reply[38:], tap4[:])
	if _, err := unix.Write(d.Fd(), reply); err != nil {
		t.Fatalf("write ARP reply: %v", err)
	}

	readMatching(t, d.Fd(), "TAP fd", func(f []byte) bool {
		return len(f) > 34 && [6]byte(f[0:6]) == peerMAC && binary.BigEndian.Uint16(f[12:]) == unix.ETH_P_IP &&
			f[23] == unix.IPPROTO_UDP && bytes.Contains(f, []byte("vknetd tap test"))
	})
}

func TestBridgeCreatedAndRemoved(t *testing.T) {
	n := enterNetns(t)
	d := openTAP(t, Config{Prefix: tapPrefix, Bridge: "vktbr0"})
	br := n.link(t, "vktbr0")
	if br.Type() != "bridge" || !isUp(br) {
		t.Errorf("vktbr0: type %s up %v, want an up bridge", br.Type(), isUp(br))
	}
	if m := n.link(t, d.Name()).Attrs().MasterIndex; m != br.Attrs().Index {
		t.Errorf("%s master index %d, want vktbr0's %d", d.Name(), m, br.Attrs().Index)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	n.gone(t, d.Name())
	n.gone(t, "vktbr0")
	if names := n.linkNames(t); !slices.Equal(names, []string{"lo"}) {
		t.Errorf("links left after Close: %v, want [lo]", names)
	}
}

func TestPreexistingTAPAndBridgeRestored(t *testing.T) {
	n := enterNetns(t)
	n.ip(t, "link", "add", "vktbr1", "type", "bridge")
	n.ip(t, "tuntap", "add", "dev", "vkt-ptap", "mode", "tap")
	n.ip(t, "link", "set", "vkt-ptap", "mtu", "1400")
	brMTU := n.link(t, "vktbr1").Attrs().MTU
	brMAC := n.link(t, "vktbr1").Attrs().HardwareAddr

	d := openTAP(t, Config{Name: "vkt-ptap", MTU: 1500, Prefix: netip.MustParsePrefix("198.18.1.1/24"), Bridge: "vktbr1"})
	tp, br := n.link(t, "vkt-ptap"), n.link(t, "vktbr1")
	if !isUp(tp) || tp.Attrs().MTU != 1500 || tp.Attrs().MasterIndex != br.Attrs().Index || !isUp(br) {
		t.Errorf("while open: TAP up %v MTU %d master %d, bridge %d up %v; want up, 1500, in the bridge, bridge up",
			isUp(tp), tp.Attrs().MTU, tp.Attrs().MasterIndex, br.Attrs().Index, isUp(br))
	}
	// Linux delivers nothing to a bridge port's address: the host's
	// address goes on the bridge.
	if got := n.v4Addrs(t, br); !slices.Equal(got, []string{"198.18.1.1/24"}) {
		t.Errorf("while open: bridge addresses %v, want [198.18.1.1/24]", got)
	}
	if got := n.v4Addrs(t, tp); len(got) != 0 {
		t.Errorf("while open: TAP addresses %v, want none (the address belongs on the bridge)", got)
	}
	if d.HostMAC() != [6]byte(br.Attrs().HardwareAddr) || d.Bridge() != "vktbr1" {
		t.Errorf("HostMAC %x, Bridge %q; want the bridge's MAC %s and vktbr1", d.HostMAC(), d.Bridge(), br.Attrs().HardwareAddr)
	}

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	tp, br = n.link(t, "vkt-ptap"), n.link(t, "vktbr1")
	if !isTAP(tp) || isUp(tp) || tp.Attrs().MTU != 1400 || tp.Attrs().MasterIndex != 0 {
		t.Errorf("after Close: TAP up %v MTU %d master %d; want it as found: down, 1400, no master",
			isUp(tp), tp.Attrs().MTU, tp.Attrs().MasterIndex)
	}
	if got := n.v4Addrs(t, tp); len(got) != 0 {
		t.Errorf("after Close: addresses %v, want none", got)
	}
	if br.Type() != "bridge" || isUp(br) || br.Attrs().MTU != brMTU {
		t.Errorf("after Close: bridge %s up %v MTU %d; want it as found: down, MTU %d", br.Type(), isUp(br), br.Attrs().MTU, brMTU)
	}
	if got := n.v4Addrs(t, br); len(got) != 0 {
		t.Errorf("after Close: bridge addresses %v, want none", got)
	}
	if !bytes.Equal(br.Attrs().HardwareAddr, brMAC) {
		t.Errorf("after Close: bridge MAC %s, want it as found: %s", br.Attrs().HardwareAddr, brMAC)
	}
}

// A TAP that already had what Open asks for keeps it after Close.
func TestPreexistingConfiguredTAPKeepsItsState(t *testing.T) {
	n := enterNetns(t)
	n.ip(t, "link", "add", "vktbr2", "type", "bridge")
	n.ip(t, "link", "set", "vktbr2", "up")
	n.ip(t, "tuntap", "add", "dev", "vkt-ctap", "mode", "tap")
	n.ip(t, "addr", "add", "198.18.3.1/24", "dev", "vkt-ctap")
	n.ip(t, "link", "set", "vkt-ctap", "master", "vktbr2", "up")

	d := openTAP(t, Config{Name: "vkt-ctap", MTU: 1500, Prefix: netip.MustParsePrefix("198.18.3.1/24"), Bridge: "vktbr2"})
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	tp, br := n.link(t, "vkt-ctap"), n.link(t, "vktbr2")
	if !isUp(tp) || tp.Attrs().MasterIndex != br.Attrs().Index || !isUp(br) {
		t.Errorf("after Close: TAP up %v master %d, bridge %d up %v; want both up, TAP still in the bridge",
			isUp(tp), tp.Attrs().MasterIndex, br.Attrs().Index, isUp(br))
	}
	if got := n.v4Addrs(t, tp); !slices.Equal(got, []string{"198.18.3.1/24"}) {
		t.Errorf("after Close: addresses %v, want the pre-existing [198.18.3.1/24]", got)
	}
}

func TestRefusesNonTAP(t *testing.T) {
	n := enterNetns(t)
	// A veth pair stands for any non-TAP device (this kernel has no dummy).
	n.ip(t, "link", "add", "vktveth0", "type", "veth", "peer", "name", "vktveth0p")
	n.ip(t, "tuntap", "add", "dev", "vkttun0", "mode", "tun")
	for name, kind := range map[string]string{"vktveth0": "veth", "vkttun0": "tun"} {
		d, err := Open(Config{Name: name, Prefix: tapPrefix})
		if err == nil {
			d.Close()
			t.Fatalf("Open(%s) succeeded on a %s device", name, kind)
		}
		if !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), kind) {
			t.Errorf("Open(%s): %q, want the device name and its kind %q", name, err, kind)
		}
		if got := n.v4Addrs(t, n.link(t, name)); len(got) != 0 {
			t.Errorf("%s got addresses %v from a refused Open", name, got)
		}
	}
}

func TestRollbackCreatedTAPWhenBridgeFails(t *testing.T) {
	n := enterNetns(t)
	n.ip(t, "link", "add", "vktveth1", "type", "veth", "peer", "name", "vktveth1p")
	d, err := Open(Config{Prefix: tapPrefix, Bridge: "vktveth1"})
	if err == nil {
		d.Close()
		t.Fatal("Open with a veth device as bridge succeeded")
	}
	if !strings.Contains(err.Error(), "vktveth1") || !strings.Contains(err.Error(), "not a bridge") {
		t.Errorf("error %q, want it to name vktveth1 as not a bridge", err)
	}
	want := []string{"lo", "vktveth1", "vktveth1p"}
	if names := n.linkNames(t); !slices.Equal(slices.Sorted(slices.Values(names)), want) {
		t.Errorf("links after failed Open: %v, want %v", names, want)
	}
}

func TestRollbackPreexistingTAPWhenBridgeFails(t *testing.T) {
	n := enterNetns(t)
	n.ip(t, "link", "add", "vktveth2", "type", "veth", "peer", "name", "vktveth2p")
	n.ip(t, "tuntap", "add", "dev", "vkt-rtap", "mode", "tap")
	n.ip(t, "link", "set", "vkt-rtap", "mtu", "1400")
	d, err := Open(Config{Name: "vkt-rtap", MTU: 1500, Prefix: netip.MustParsePrefix("198.18.2.1/24"), Bridge: "vktveth2"})
	if err == nil {
		d.Close()
		t.Fatal("Open with a veth device as bridge succeeded")
	}
	tp := n.link(t, "vkt-rtap")
	if isUp(tp) || tp.Attrs().MTU != 1400 || tp.Attrs().MasterIndex != 0 {
		t.Errorf("after failed Open: TAP up %v MTU %d master %d; want it as found: down, 1400, no master",
			isUp(tp), tp.Attrs().MTU, tp.Attrs().MasterIndex)
	}
	if got := n.v4Addrs(t, tp); len(got) != 0 {
		t.Errorf("after failed Open: addresses %v, want none", got)
	}
}

func TestRollbackBadBridgeName(t *testing.T) {
	n := enterNetns(t)
	for _, bridge := range []string{"vkt-bridge-too-long", "vkt:br"} {
		d, err := Open(Config{Prefix: tapPrefix, Bridge: bridge})
		if err == nil {
			d.Close()
			t.Fatalf("Open with bridge %q succeeded", bridge)
		}
		if !strings.Contains(err.Error(), bridge) || !strings.Contains(err.Error(), "-b") {
			t.Errorf("error %q, want it to name the bridge %q and the -b flag", err, bridge)
		}
		if names := n.linkNames(t); !slices.Equal(names, []string{"lo"}) {
			t.Errorf("links after failed Open: %v, want [lo]", names)
		}
	}
}

// Without CAP_NET_ADMIN the kernel refuses to create a TAP; the error must
// say what is missing. Capabilities are per thread, and this thread is the
// test's locked one.
func TestNeedsCapNetAdmin(t *testing.T) {
	n := enterNetns(t)
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var saved [2]unix.CapUserData
	if err := unix.Capget(&hdr, &saved[0]); err != nil {
		t.Fatalf("capget: %v", err)
	}
	dropped := saved
	dropped[0].Effective &^= 1 << unix.CAP_NET_ADMIN
	if err := unix.Capset(&hdr, &dropped[0]); err != nil {
		t.Fatalf("capset: %v", err)
	}
	d, err := Open(Config{Prefix: tapPrefix})
	if rerr := unix.Capset(&hdr, &saved[0]); rerr != nil {
		t.Fatalf("restore capabilities: %v", rerr)
	}
	if err == nil {
		d.Close()
		t.Fatal("Open without CAP_NET_ADMIN succeeded")
	}
	if !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "needs root or CAP_NET_ADMIN") {
		t.Errorf("error %q, want EPERM and the advice about root or CAP_NET_ADMIN", err)
	}
	if names := n.linkNames(t); !slices.Equal(names, []string{"lo"}) {
		t.Errorf("links after failed Open: %v, want [lo]", names)
	}
}

func TestMissingTunDevice(t *testing.T) {
	old := tunPath
	tunPath = "/nonexistent/vkt-tap-test/tun"
	defer func() { tunPath = old }()
	d, err := Open(Config{})
	if err == nil {
		d.Close()
		t.Fatal("Open with a missing clone device succeeded")
	}
	if !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), "modprobe tun") || !strings.Contains(err.Error(), tunPath) {
		t.Errorf("error %q, want ENOENT naming %s and the modprobe advice", err, tunPath)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetSocket is an AF_PACKET socket on the TAP, the kernel's view of the
// frames it receives from and sends to the TAP.
func packetSocket(t *testing.T, ifindex int) int {
	t.Helper()
	s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(s) })
	if err := unix.Bind(s, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		t.Fatalf("bind packet socket to ifindex %d: %v", ifindex, err)
	}
	return s
}

// testFrame is a minimum-size frame with the local experimental ethertype
// 0x88b5 carrying tag, so it is told apart from the kernel's own IPv6
// chatter on a new interface.
func testFrame(dst, src [6]byte, tag string) []byte {
	f := make([]byte, 60)
	copy(f[0:], dst[:])
	copy(f[6:], src[:])
	binary.BigEndian.PutUint16(f[12:], 0x88b5)
	copy(f[14:], tag)
	return f
}

// readMatching reads frames from fd, skipping others, until match accepts
// one; it gives up after a few seconds.
func readMatching(t *testing.T, fd int, what string, match func([]byte) bool) []byte {
	t.Helper()
	buf := make([]byte, 65536)
	deadline := time.Now().Add(3 * time.Second)
	var skipped int
	for time.Now().Before(deadline) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(pfd, 100); err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatalf("poll %s: %v", what, err)
		} else if n == 0 {
			continue
		}
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("read %s: %v", what, err)
		}
		if match(buf[:n]) {
			return slices.Clone(buf[:n])
		}
		skipped++
	}
	t.Fatalf("no matching frame on %s within 3s (%d others skipped)", what, skipped)
	return nil
}

// A created TAP normally vanishes with its descriptor; a copy of the
// descriptor (a forked child that has not exec'd yet holds one) keeps it
// alive, and Close must delete it anyway.
func TestCloseDeletesTAPKeptAliveByCopy(t *testing.T) {
	n := enterNetns(t)
	d := openTAP(t, Config{Name: "vkt-dup"})
	dup, err := unix.Dup(d.Fd())
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dup)
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	n.gone(t, "vkt-dup")
}

// Close works on the namespace Open ran in, whatever thread calls it.
func TestCloseFromAnotherThread(t *testing.T) {
	n := enterNetns(t)
	n.ip(t, "tuntap", "add", "dev", "vkt-otap", "mode", "tap")
	d := openTAP(t, Config{Name: "vkt-otap", Prefix: tapPrefix, Bridge: "vktbr3"})
	done := make(chan error)
	go func() { done <- d.Close() }() // a new goroutine is not locked to this thread
	if err := <-done; err != nil {
		t.Fatalf("Close: %v", err)
	}
	tp := n.link(t, "vkt-otap")
	if isUp(tp) || tp.Attrs().MasterIndex != 0 {
		t.Errorf("after Close: TAP up %v master %d, want down and no master", isUp(tp), tp.Attrs().MasterIndex)
	}
	if got := n.v4Addrs(t, tp); len(got) != 0 {
		t.Errorf("after Close: addresses %v, want none", got)
	}
	n.gone(t, "vktbr3")
}

// Offload asks for TSO and checksum offload; USO adds UDP superframes
// where the kernel has them (6.2+; checked with the kernel's answer, not
// the version). The plug opens its TAP without USO: its link has no way
// to pass UDP superframes on.
func TestOffloadAndUSO(t *testing.T) {
	enterNetns(t)
	plain := openTAP(t, Config{Name: "vkt-off0", Offload: true})
	if !plain.VnetHdr() || plain.USO() {
		t.Errorf("Offload alone: VnetHdr %v USO %v, want true, false (%s)", plain.VnetHdr(), plain.USO(), plain.OffloadNote())
	}
	uso := openTAP(t, Config{Name: "vkt-off1", Offload: true, USO: true})
	if !uso.VnetHdr() {
		t.Fatalf("Offload and USO: no virtio_net_hdr (%s)", uso.OffloadNote())
	}
	// What the kernel says to the USO bits alone decides what USO must be.
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, _ := unix.NewIfreq("vkt-off2")
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		t.Fatal(err)
	}
	kernelHasUSO := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunFCsum|tunFTSO4|tunFTSO6|tunFUSO4|tunFUSO6) == nil
	if uso.USO() != kernelHasUSO {
		t.Errorf("USO() = %v, but the kernel takes the USO bits: %v", uso.USO(), kernelHasUSO)
	}
}
