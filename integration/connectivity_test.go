//go:build linux

package integration

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// socatClient is a "VM": a namespace whose TAP vkc0 carries cidr and is
// joined to the switch by socat, as REFERENCE.md §2 and the README show.
func socatClient(t *testing.T, sock, cidr string) string {
	t.Helper()
	ns := newNetns(t)
	p := startProc(t, "ip", "netns", "exec", ns, "socat",
		"TUN:"+cidr+",tun-type=tap,tun-name=vkc0,iff-up,iff-no-pi",
		"UNIX-CONNECT:"+sock+",type=5")
	if !waitFor(5*time.Second, func() bool {
		show, ok := linkShow(ns, "vkc0")
		return ok && hasFlag(show, "UP") || p.exited()
	}) || p.exited() {
		t.Fatalf("socat client %s did not bring up vkc0 within 5s (exited: %v); stderr:\n%s", cidr, p.exited(), p.stderr.String())
	}
	return ns
}

// ping pings addr from ns until one answer comes back or timeout passes:
// the first echo may wait for ARP.
func ping(t *testing.T, ns, addr string, timeout time.Duration) {
	t.Helper()
	var out []byte
	ok := waitFor(timeout, func() bool {
		var err error
		out, err = exec.Command("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", addr).CombinedOutput()
		return err == nil
	})
	if !ok {
		t.Errorf("ping %s from namespace %s got no answer within %v:\n%s", addr, ns, timeout, out)
	}
}

func TestSocatClientsPingEachOtherAndTheTAP(t *testing.T) {
	needRoot(t)
	dns := newNetns(t)
	d := startDaemon(t, daemonSpec{ns: dns, args: []string{"198.18.0.1/16"}})
	if show, ok := linkShow(dns, d.tap); !ok || !hasFlag(show, "UP") {
		t.Fatalf("TAP %s in the daemon's namespace is missing or down:\n%s", d.tap, show)
	}
	addr := ipRun(t, "-n", dns, "-4", "addr", "show", "dev", d.tap)
	if !strings.Contains(addr, "inet 198.18.0.1/16") {
		t.Fatalf("TAP %s does not carry 198.18.0.1/16:\n%s", d.tap, addr)
	}
	c1 := socatClient(t, d.sock, "198.18.0.2/16")
	c2 := socatClient(t, d.sock, "198.18.0.3/16")

	ping(t, c1, "198.18.0.3", 10*time.Second)
	ping(t, c2, "198.18.0.2", 10*time.Second)
	ping(t, c1, "198.18.0.1", 10*time.Second)
	ping(t, c2, "198.18.0.1", 10*time.Second)
	ping(t, dns, "198.18.0.2", 10*time.Second)

	// Nothing the real clients sent broke a secure-mode rule, except the
	// IPv6 their kernels send on their own (no --ipv6 was given).
	for _, p := range d.counters().ports {
		for k, v := range p {
			if strings.HasPrefix(k, "drop_") && k != "drop_ipv6-disabled" {
				t.Errorf("port %s (%s) dropped frames of ordinary pings: %s=%s", p["port"], p["kind"], k, v)
			}
		}
	}
}
