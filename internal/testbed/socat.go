package testbed

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// ClientTap is the name of the TAP that SocatClient creates in its namespace. Each
// client has a namespace of its own, so the name never clashes.
const ClientTap = "vkt0"

// SocatClient joins the switch listening on the SEQPACKET socket sock the way a VM
// would: in a new namespace, socat bridges a TAP named ClientTap carrying cidr (which
// must be in BenchNet) to the socket, one frame per message (REFERENCE.md §2). It
// returns once the TAP is up with its address, or fails the test with socat's output.
//
// IPv6 is disabled in the client's namespace (see Netns.DisableIPv6) so that the
// client sends only what the test makes it send: ARP and IPv4.
func SocatClient(t testing.TB, sock, cidr string) (*Netns, *Proc) {
	t.Helper()
	RequireTool(t, "socat")
	addr := CheckAddr(t, cidr)
	if !strings.Contains(cidr, "/") {
		t.Fatalf("SocatClient: %q needs a prefix length, e.g. %s/16", cidr, cidr)
	}
	n := NewNetns(t)
	n.DisableIPv6(t)
	p := n.Start(t, "socat",
		"TUN:"+cidr+",tun-type=tap,tun-name="+ClientTap+",iff-up,iff-no-pi",
		"UNIX-CONNECT:"+sock+",type=5")

	// socat opens the TAP before it connects, so a TAP that is up with its address
	// does not prove the connection: also require socat to be alive a moment later.
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-p.Done():
			t.Fatalf("socat client for %s exited (%v):\n%s", sock, p.Wait(0), p.Output())
		default:
		}
		link, _ := exec.Command("ip", "-o", "-n", n.Name, "link", "show", "dev", ClientTap).Output()
		ips, _ := exec.Command("ip", "-o", "-n", n.Name, "addr", "show", "dev", ClientTap).Output()
		if HasFlag(string(link), "UP") && strings.Contains(string(ips), " "+addr.String()+"/") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("socat client for %s: %s in %s not up with %s after 10s:\n%s\n%s\nsocat output:\n%s",
				sock, ClientTap, n.Name, cidr, link, ips, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-p.Done():
		t.Fatalf("socat client for %s exited (%v):\n%s", sock, p.Wait(0), p.Output())
	case <-time.After(100 * time.Millisecond):
	}
	return n, p
}
