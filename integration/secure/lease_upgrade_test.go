//go:build linux

package secure

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vknetd/vknetd/control"
	"github.com/vknetd/vknetd/internal/testbed"
)

// TestLeasesSurviveUpgrade is issue 21's "bindings survive an upgrade",
// with a real daemon: under --ip-source dhcp and --user-net, a client
// leases its address from dnsmasq and another uses a static address of its
// user's range; after vknetctl upgrade, vknetctl bindings lists both with
// the same MAC, port and source, and an end no later than before; the
// leased client still pings the host, and a client that took the leased
// address for itself is still refused.
func TestLeasesSurviveUpgrade(t *testing.T) {
	testbed.RequireRoot(t)
	testbed.RequireTool(t, "dnsmasq", "busybox")
	vknetctl, remove, err := testbed.BuildCommand("vknetctl")
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	// The clients are socat processes run by root: the range is root's.
	d := startDaemon(t, "--ip-source", "dhcp", "--user-net", "0=198.18.9.0/24")
	startDnsmasq(t, d)
	ctl := d.p.Sock + ".ctl"
	leased, leasedPort, leasedMAC, lease := dhcpClient(t, d)
	static, _, staticPort, staticMAC := d.socat(t, "198.18.9.5/16")
	spoofer, _, spooferPort, _ := d.socat(t, lease.String())
	for _, c := range []*testbed.Netns{leased, static} {
		if ok, out := c.Ping(t, tapIP.String(), 2); !ok {
			t.Fatalf("a client cannot ping the host before the upgrade:\n%s\ndaemon:\n%s", out, d.p.Output())
		}
	}
	// A refused ping costs its deadline: 1 s, not Ping's count+2.
	pingsHost := func(ns *testbed.Netns) bool {
		_, err := ns.Try("ping", "-n", "-c", "2", "-i", "0.2", "-w", "1", tapIP.String())
		return err == nil
	}
	if pingsHost(spoofer) {
		t.Fatal("the client that took the leased address pinged the host before the upgrade")
	}

	listBindings := func() map[string]control.Binding {
		t.Helper()
		out, err := exec.Command(vknetctl, "-s", ctl, "--json", "bindings").Output()
		if err != nil {
			t.Fatalf("vknetctl bindings: %v", err)
		}
		var bs []control.Binding
		if err := json.Unmarshal(out, &bs); err != nil {
			t.Fatalf("vknetctl --json bindings: %v\n%s", err, out)
		}
		m := map[string]control.Binding{}
		for _, b := range bs {
			m[b.IP] = b
		}
		return m
	}
	want := map[string]struct {
		mac    [6]byte
		port   int
		source string
	}{
		lease.Addr().String(): {leasedMAC, leasedPort, "lease"},
		"198.18.9.5":          {staticMAC, staticPort, "range"},
	}
	before := listBindings()
	listed := time.Now()
	for ip, w := range want {
		b := before[ip]
		if b.MAC != hw(w.mac).String() || b.Port != uint32(w.port) || b.Source != w.source || b.ExpiresSecs <= 0 {
			t.Fatalf("before the upgrade %s is bound as %+v, want %s port %d %s with an end", ip, b, hw(w.mac), w.port, w.source)
		}
	}

	upgradeDaemon(t, vknetctl, d.p, ctl)

	after := listBindings()
	elapsed := time.Since(listed).Seconds()
	for ip, w := range want {
		b, a := before[ip], after[ip]
		if a.MAC != b.MAC || a.Port != b.Port || a.Source != w.source {
			t.Errorf("%s after the upgrade: %+v, before %+v", ip, a, b)
		}
		// A static address's end moves with use (the pings); a lease's
		// only with a renewal, none of which dnsmasq's hour-long lease
		// needs here.
		if w.source == "lease" && (a.ExpiresSecs > b.ExpiresSecs+0.5 || a.ExpiresSecs < b.ExpiresSecs-elapsed-1) {
			t.Errorf("the lease ends in %.1f s after the upgrade and %.1f s before, listed %.1f s apart", a.ExpiresSecs, b.ExpiresSecs, elapsed)
		}
	}
	if len(after) != len(before) {
		t.Errorf("bindings after the upgrade %v, before %v", after, before)
	}

	if ok, out := leased.Ping(t, tapIP.String(), 3); !ok || !strings.Contains(out, "3 received") {
		t.Errorf("the leased client cannot ping the host after the upgrade:\n%s", out)
	}
	if pingsHost(spoofer) {
		t.Error("the client that took the leased address pinged the host after the upgrade")
	}
	c, err := control.Dial(ctl)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ports, err := c.Ports()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ports {
		if p.ID == uint32(spooferPort) && p.Drops[notLeased] == 0 {
			t.Errorf("the spoofing client's drops after the upgrade are %v, want %s", p.Drops, notLeased)
		}
	}
}
