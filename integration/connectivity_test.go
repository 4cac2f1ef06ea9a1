//go:build linux

package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
)

// ping pings addr from ns until one answer comes back or timeout passes:
// the first echo may wait for ARP.
func ping(t *testing.T, ns *testbed.Netns, addr string, timeout time.Duration) {
	t.Helper()
	testbed.CheckAddr(t, addr)
	var out string
	ok := waitFor(timeout, func() bool {
		var err error
		out, err = ns.Try("ping", "-c", "1", "-W", "1", addr)
		return err == nil
	})
	if !ok {
		t.Errorf("ping %s from namespace %s got no answer within %v:\n%s", addr, ns.Name, timeout, out)
	}
}

func TestSocatClientsPingEachOtherAndTheTAP(t *testing.T) {
	needRoot(t)
	dns := testbed.NewNetns(t)
	d := startDaemon(t, dns, testbed.DaemonConfig{Args: []string{"198.18.0.1/16"}})
	if show, ok := dns.LinkShow(d.TAP); !ok || !testbed.HasFlag(show, "UP") {
		t.Fatalf("TAP %s in the daemon's namespace is missing or down:\n%s", d.TAP, show)
	}
	addr := dns.Run(t, "ip", "-4", "addr", "show", "dev", d.TAP)
	if !strings.Contains(addr, "inet 198.18.0.1/16") {
		t.Fatalf("TAP %s does not carry 198.18.0.1/16:\n%s", d.TAP, addr)
	}
	c1, _ := testbed.SocatClient(t, d.Sock, "198.18.0.2/16")
	c2, _ := testbed.SocatClient(t, d.Sock, "198.18.0.3/16")

	ping(t, c1, "198.18.0.3", 10*time.Second)
	ping(t, c2, "198.18.0.2", 10*time.Second)
	ping(t, c1, "198.18.0.1", 10*time.Second)
	ping(t, c2, "198.18.0.1", 10*time.Second)
	ping(t, dns, "198.18.0.2", 10*time.Second)

	// Nothing the real clients sent broke a secure-mode rule, except the
	// IPv6 their kernels send on their own (no --ipv6 was given), which the
	// kernel filter drops before the daemon reads it (kernel-filter; it
	// drops nothing userspace would pass: secure's differential test).
	for _, p := range d.Counters(t).Ports {
		for k, v := range p {
			if strings.HasPrefix(k, "drop_") && k != "drop_ipv6-disabled" && k != "drop_kernel-filter" {
				t.Errorf("port %s (%s) dropped frames of ordinary pings: %s=%s", p["port"], p["kind"], k, v)
			}
		}
	}
}
