//go:build linux

package secure

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
)

// notLeased is the drop reason of --ip-source dhcp.
const notLeased = "ip-not-leased"

// TestDHCPModeOnlyLeasedAddresses: with --ip-source dhcp a client leases an
// address from dnsmasq on the host's side and pings the host from it, but
// neither a client with a static address nor the leased client from a
// second address it gave itself gets through (ip-not-leased); the leased
// address keeps working. The same clients in first-use mode all get through,
// which is what the --ip-source dhcp half must change.
func TestDHCPModeOnlyLeasedAddresses(t *testing.T) {
	testbed.RequireRoot(t)
	testbed.RequireTool(t, "dnsmasq", "busybox")
	d := startDaemon(t, "--ip-source", "dhcp")
	startDnsmasq(t, d)
	leased, leasedPort, _, lease := dhcpClient(t, d)
	if ok, out := leased.Ping(t, tapIP.String(), 3); !ok || !strings.Contains(out, "3 received") {
		t.Fatalf("the client cannot ping the host from its leased %v:\n%s\ndaemon:\n%s", lease.Addr(), out, d.p.Output())
	}
	if dr := drops(d.counters(t, leasedPort)); len(dr) != 0 {
		t.Errorf("the leased client's frames were dropped: %v", dr)
	}

	// A client with an address of the network the server never leased.
	static, _, staticPort, _ := d.socat(t, "198.18.0.120/16")
	if ok, out := static.Ping(t, tapIP.String(), 2); ok {
		t.Errorf("a client with the unleased 198.18.0.120 pinged the host:\n%s", out)
	}
	if dr := drops(d.counters(t, staticPort)); dr[notLeased] == 0 {
		t.Errorf("the static client's drops are %v, want %s", dr, notLeased)
	}

	// The leased client giving itself another address.
	leased.Run(t, "ip", "addr", "add", "198.18.0.121/16", "dev", testbed.ClientTap)
	if out, err := leased.Try("ping", "-n", "-c", "2", "-W", "1", "-I", "198.18.0.121", tapIP.String()); err == nil {
		t.Errorf("the leased client pinged the host from the unleased 198.18.0.121:\n%s", out)
	}
	if dr := drops(d.counters(t, leasedPort)); dr[notLeased] == 0 {
		t.Errorf("the leased client's drops are %v, want %s for 198.18.0.121", dr, notLeased)
	}
	if out, err := leased.Try("ping", "-n", "-c", "2", "-W", "2", "-I", lease.Addr().String(), tapIP.String()); err != nil {
		t.Errorf("the leased client no longer pings from its lease %v: %v\n%s", lease.Addr(), err, out)
	}
	if out := d.p.Output(); !strings.Contains(out, "reason="+notLeased) {
		t.Errorf("the daemon logged no %s drop:\n%s", notLeased, out)
	}
}

// TestDHCPModeReleaseEndsLease: a client that releases its lease (busybox
// udhcpc -R sends a DHCPRELEASE when it is stopped) can no longer use the
// address.
func TestDHCPModeReleaseEndsLease(t *testing.T) {
	testbed.RequireRoot(t)
	testbed.RequireTool(t, "dnsmasq", "busybox")
	d := startDaemon(t, "--ip-source", "dhcp")
	leases := startDnsmasq(t, d)
	client := testbed.NewNetns(t)
	client.DisableIPv6(t)
	before := len(d.connectedPorts())
	client.Start(t, "socat", "TUN,tun-type=tap,tun-name="+testbed.ClientTap+",iff-up,iff-no-pi",
		"UNIX-CONNECT:"+d.p.Sock+",type=5")
	port := d.waitNewPort(t, before)
	client.WaitLink(t, testbed.ClientTap, 5*time.Second)

	dir := t.TempDir()
	script, leaseOut := filepath.Join(dir, "udhcpc.sh"), filepath.Join(dir, "lease")
	if err := os.WriteFile(script, []byte(udhcpcScript), 0o755); err != nil {
		t.Fatal(err)
	}
	udhcpc := client.Start(t, "env", "LEASE_OUT="+leaseOut,
		"busybox", "udhcpc", "-f", "-R", "-i", testbed.ClientTap, "-t", "5", "-T", "2", "-s", script)
	var lease netip.Prefix
	for deadline := time.Now().Add(15 * time.Second); !lease.IsValid(); time.Sleep(50 * time.Millisecond) {
		if b, err := os.ReadFile(leaseOut); err == nil {
			lease, _ = netip.ParsePrefix(strings.TrimSpace(string(b)))
		}
		if time.Now().After(deadline) {
			t.Fatalf("udhcpc got no lease through the switch:\n%s", udhcpc.Output())
		}
	}
	if ok, out := client.Ping(t, tapIP.String(), 2); !ok {
		t.Fatalf("the client cannot ping the host from its leased %v:\n%s", lease.Addr(), out)
	}
	if err := udhcpc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	udhcpc.Wait(5 * time.Second)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if db, _ := os.ReadFile(leases); !strings.Contains(string(db), lease.Addr().String()) {
			break // dnsmasq has the release: so has the switch, before it
		}
		if time.Now().After(deadline) {
			t.Fatalf("dnsmasq still lists %v: udhcpc sent no release?\n%s", lease.Addr(), udhcpc.Output())
		}
	}
	// The release deconfigured the address: put it back, as a client that
	// keeps using an address after giving it up would.
	client.Run(t, "ip", "addr", "replace", lease.String(), "dev", testbed.ClientTap)
	if ok, out := client.Ping(t, tapIP.String(), 2); ok {
		t.Errorf("the client pinged the host from %v after releasing it:\n%s", lease.Addr(), out)
	}
	if dr := drops(d.counters(t, port)); dr[notLeased] == 0 {
		t.Errorf("the released client's drops are %v, want %s", dr, notLeased)
	}
}
