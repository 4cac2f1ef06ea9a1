//go:build linux

package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
)

// With -b the host's address is on the bridge, where Linux delivers to
// it, and secure mode takes the bridge's MAC for the host's: a client
// reaches the host and the host reaches the client, in both modes.
func TestBridgeHostAndClientReachEachOther(t *testing.T) {
	needRoot(t)
	for _, mode := range []struct {
		name string
		args []string
	}{
		{"secure", []string{"-b", "vkbr0", "198.18.0.1/16"}},
		{"unsecure", []string{"-U", "-b", "vkbr0", "198.18.0.1/16"}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			ns := testbed.NewNetns(t)
			ns.DisableIPv6(t)
			d := startDaemon(t, ns, testbed.DaemonConfig{Args: mode.args})
			if addr := ns.Run(t, "ip", "-4", "-o", "addr", "show", "dev", "vkbr0"); !strings.Contains(addr, "inet 198.18.0.1/16") {
				t.Fatalf("bridge vkbr0 does not carry 198.18.0.1/16:\n%s", addr)
			}
			if addr := ns.Run(t, "ip", "-4", "-o", "addr", "show", "dev", d.TAP); strings.Contains(addr, "inet ") {
				t.Errorf("the TAP %s, a bridge port, carries an address Linux would never deliver to:\n%s", d.TAP, addr)
			}
			c, _ := testbed.SocatClient(t, d.Sock, "198.18.0.11/16")
			ping(t, c, "198.18.0.1", 10*time.Second)
			ping(t, ns, "198.18.0.11", 10*time.Second)
			for _, p := range d.Counters(t).Ports {
				for k, v := range p {
					if strings.HasPrefix(k, "drop_") {
						t.Errorf("port %s (%s) dropped frames of ordinary pings: %s=%s", p["port"], p["kind"], k, v)
					}
				}
			}
		})
	}
}
