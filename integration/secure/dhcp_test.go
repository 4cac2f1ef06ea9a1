//go:build linux

package secure

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
)

// udhcpcScript configures the leased address and records it, for busybox
// udhcpc's -s. udhcpc passes the address in $ip and the prefix length in
// $mask.
const udhcpcScript = `#!/bin/sh
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound|renew)
	ip -4 addr flush dev "$interface"
	ip addr add "$ip/$mask" dev "$interface"
	echo "$ip/$mask" > "$LEASE_OUT"
	;;
esac
`

// startDnsmasq serves DHCP on the daemon's TAP for 198.18.0.50-99 and
// returns its lease file.
func startDnsmasq(t *testing.T, d *daemon) string {
	t.Helper()
	testbed.RequireTool(t, "dnsmasq")
	dir := t.TempDir()
	leases := filepath.Join(dir, "leases")
	d.ns.Start(t, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
		"--interface="+tapName, "--bind-interfaces", "--dhcp-range=198.18.0.50,198.18.0.99,255.255.0.0",
		"--dhcp-leasefile="+leases, "--pid-file="+filepath.Join(dir, "dnsmasq.pid"), "--log-dhcp")
	return leases
}

// dhcpClient starts a socat client whose TAP has no address and leases
// one with busybox udhcpc through the switch. It returns the client's
// namespace, port, TAP MAC and lease.
func dhcpClient(t *testing.T, d *daemon) (*testbed.Netns, int, [6]byte, netip.Prefix) {
	t.Helper()
	testbed.RequireTool(t, "busybox")
	client := testbed.NewNetns(t)
	client.DisableIPv6(t)
	before := len(d.connectedPorts())
	client.Start(t, "socat", "TUN,tun-type=tap,tun-name="+testbed.ClientTap+",iff-up,iff-no-pi",
		"UNIX-CONNECT:"+d.p.Sock+",type=5")
	port := d.waitNewPort(t, before)
	client.WaitLink(t, testbed.ClientTap, 5*time.Second)
	mac := client.LinkMAC(t, testbed.ClientTap)

	dir := t.TempDir()
	script := filepath.Join(dir, "udhcpc.sh")
	if err := os.WriteFile(script, []byte(udhcpcScript), 0o755); err != nil {
		t.Fatal(err)
	}
	leaseOut := filepath.Join(dir, "lease")
	out, err := client.Try("env", "LEASE_OUT="+leaseOut,
		"busybox", "udhcpc", "-i", testbed.ClientTap, "-n", "-q", "-t", "5", "-T", "2", "-s", script)
	if err != nil {
		t.Fatalf("udhcpc got no lease through the switch: %v\n%s\ndaemon:\n%s", err, out, d.p.Output())
	}
	got, err := os.ReadFile(leaseOut)
	if err != nil {
		t.Fatalf("udhcpc succeeded but its script recorded no lease (%v):\n%s", err, out)
	}
	lease, err := netip.ParsePrefix(strings.TrimSpace(string(got)))
	if err != nil {
		t.Fatalf("lease %q: %v", got, err)
	}
	lo, hi := netip.MustParseAddr("198.18.0.50"), netip.MustParseAddr("198.18.0.99")
	if a := lease.Addr(); a.Less(lo) || hi.Less(a) || lease.Bits() != 16 {
		t.Fatalf("leased %v, want an address of 198.18.0.50-99 with /16", lease)
	}
	return client, port, mac, lease
}

// TestDHCPLeaseInSecureMode: a client whose TAP has no address yet leases
// one from dnsmasq on the TAP's side, through the switch in secure mode
// (its DHCP messages come from 0.0.0.0), then pings the host from it.
func TestDHCPLeaseInSecureMode(t *testing.T) {
	testbed.RequireRoot(t)
	testbed.RequireTool(t, "dnsmasq", "busybox")
	d := startDaemon(t)
	leases := startDnsmasq(t, d)
	client, port, mac, lease := dhcpClient(t, d)

	db, _ := os.ReadFile(leases)
	if !strings.Contains(string(db), lease.Addr().String()) {
		t.Errorf("dnsmasq's lease file does not list %v:\n%s", lease.Addr(), db)
	}
	if ok, out := client.Ping(t, tapIP.String(), 3); !ok || !strings.Contains(out, "3 received") {
		t.Errorf("the client cannot ping the host from its leased %v:\n%s", lease.Addr(), out)
	}
	// Nothing the client sent (DHCP from 0.0.0.0 included) was dropped,
	// and its leased address resolves to it on the host.
	if dr := drops(d.counters(t, port)); len(dr) != 0 {
		t.Errorf("the DHCP client's frames were dropped: %v", dr)
	}
	if n := neighbours(t, d.ns, tapName); n[lease.Addr()] != mac {
		t.Errorf("the host's ARP cache has %v at %x, want the client's %x", lease.Addr(), n[lease.Addr()], mac)
	}
}
