//go:build linux

package plug

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
)

// TestPlugCompare measures, in one run, iperf3 TCP both ways between the
// daemon's host side (its namespace) and a namespace plugged with
// vknetplug over SEQPACKET, with vknetplug over vhost-user, and with socat
// over SEQPACKET, and between two namespaces both plugged over
// vhost-user, next to the kernel's own bridge between two veth
// namespaces. It logs the rates, each as a share of the bridge's, and the
// daemon's resident memory (it stays flat: VKNETPLUG_SECONDS=60 makes
// each run a minute), and asserts none: timings are not assertions here.
// It takes about a minute, so it runs only with VKNETPLUG_COMPARE=1
// (VKNETPLUG_SECONDS sets the iperf3 time, 5).
//
//	VKNETPLUG_COMPARE=1 go test -v -run Compare ./integration/plug/
func TestPlugCompare(t *testing.T) {
	if os.Getenv("VKNETPLUG_COMPARE") != "1" {
		t.Skip("set VKNETPLUG_COMPARE=1 to measure (about a minute)")
	}
	needRoot(t)
	testbed.RequireTool(t, "iperf3", "socat")
	secs := 5
	if s, err := strconv.Atoi(os.Getenv("VKNETPLUG_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	d, vhostPath := switchNS(t)
	type result struct {
		name               string
		up, down           float64
		rssBefore, rssPeak int // the daemon's VmRSS and VmHWM, KiB: memory stays flat
	}
	var results []result
	measure := func(name string, server, client *testbed.Netns, addr string) {
		r := result{name: name, rssBefore: procKiB(t, d.Pid(), "VmRSS")}
		r.up = iperf3(t, server, client, addr, secs, false)
		r.down = iperf3(t, server, client, addr, secs, true)
		r.rssPeak = procKiB(t, d.Pid(), "VmHWM")
		results = append(results, r)
	}
	for i, c := range []struct {
		name string
		args []string
	}{
		{"vknetplug -p (SEQPACKET)", []string{"-p", d.Sock}},
		{"vknetplug --vhost-user", []string{"--vhost-user", vhostPath}},
	} {
		addr := "198.18.0." + strconv.Itoa(10+i) + "/16"
		ns, p := plugged(t, append(c.args, addr)...)
		mustPing(t, ns, host, c.name)
		measure(c.name, d.Netns, ns, host)
		stopped(t, ns, p)
	}
	// Two namespaces plugged over vhost-user, one the other's server.
	nsA, pa := plugged(t, "--vhost-user", vhostPath, "198.18.0.30/16")
	nsB, pb := plugged(t, "--vhost-user", vhostPath, "198.18.0.31/16")
	mustPing(t, nsB, "198.18.0.30", "plugged to plugged")
	measure("vknetplug <-> vknetplug (vhost-user)", nsA, nsB, "198.18.0.30")
	stopped(t, nsA, pa)
	stopped(t, nsB, pb)

	socatNS, socat := testbed.SocatClient(t, d.Sock, "198.18.0.20/16")
	mustPing(t, socatNS, host, "socat")
	measure("socat (SEQPACKET)", d.Netns, socatNS, host)
	socat.Stop(5 * time.Second)

	// The kernel's bridge between two veth namespaces, for scale.
	br, x, y := testbed.NewNetns(t), testbed.NewNetns(t), testbed.NewNetns(t)
	br.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	br.Run(t, "ip", "link", "set", "br0", "up")
	for i, ns := range []*testbed.Netns{x, y} {
		port := "p" + strconv.Itoa(i)
		br.Run(t, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.Name)
		br.Run(t, "ip", "link", "set", port, "master", "br0", "up")
		ns.Run(t, "ip", "addr", "add", "198.18.1."+strconv.Itoa(i+1)+"/24", "dev", "eth0")
		ns.Run(t, "ip", "link", "set", "eth0", "up")
	}
	mustPing(t, y, "198.18.1.1", "kernel bridge")
	measure("kernel bridge (veth)", x, y, "198.18.1.1")

	t.Logf("iperf3 -t %d, TCP, secure mode, one run (client namespace -> host side is 'up'):", secs)
	bridge := results[len(results)-1]
	for _, r := range results {
		t.Logf("  %-38s up %6.2f Gbit/s (%.2f of the bridge)   down %6.2f Gbit/s (%.2f)   vknetd RSS %d KiB before, peak %d KiB",
			r.name, r.up, r.up/bridge.up, r.down, r.down/bridge.down, r.rssBefore, r.rssPeak)
	}
}

// procKiB reads a "Vm..." line of /proc/PID/status, in KiB.
func procKiB(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
