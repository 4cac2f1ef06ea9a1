//go:build linux

package plug

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
)

const host = "198.18.0.1" // the daemon's TAP, in the switch's namespace

// switchNS starts vknetd in secure mode in a namespace of its own, with
// a vhost-user listener beside its SEQPACKET socket.
func switchNS(t *testing.T) (d *testbed.Daemon, vhostPath string) {
	t.Helper()
	dir := testbed.ShortTempDir(t)
	vhostPath = filepath.Join(dir, "vhost")
	ns := testbed.NewNetns(t)
	d = ns.StartDaemon(t, vknetd, testbed.DaemonConfig{Sock: filepath.Join(dir, "vknet"),
		Args: []string{"--vhost-user", vhostPath, host + "/16"}})
	return d, vhostPath
}

// plugged runs vknetplug with args (the switch's socket and the address)
// in a new namespace and waits for it to print its TAP's name.
func plugged(t *testing.T, args ...string) (*testbed.Netns, *testbed.Proc) {
	t.Helper()
	ns := testbed.NewNetns(t)
	ns.DisableIPv6(t)
	p := ns.StartSplit(t, append([]string{vknetplug}, args...)...)
	waitReady(t, p, "vkplug0")
	return ns, p
}

// waitReady waits for the plug to print tapName on stdout.
func waitReady(t *testing.T, p *testbed.Proc, tapName string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !strings.Contains(p.Stdout(), tapName+"\n") {
		select {
		case <-p.Done():
			t.Fatalf("vknetplug exited (%v) before it was ready:\n%s", p.Wait(0), p.Output())
		case <-deadline:
			t.Fatalf("vknetplug printed no TAP name within 10s:\n%s", p.Output())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func mustPing(t *testing.T, from *testbed.Netns, addr, what string) {
	t.Helper()
	ok, out := from.Ping(t, addr, 3)
	if !ok || !strings.Contains(out, " 3 received") {
		t.Errorf("ping %s (%s): not every reply came back:\n%s", addr, what, out)
	}
}

// iperf3 runs seconds of TCP between client and the server at addr in
// server's namespace (reverse: the server sends) and returns the
// receiver's rate in Gbit/s.
func iperf3(t *testing.T, server, client *testbed.Netns, addr string, seconds int, reverse bool) float64 {
	t.Helper()
	testbed.RequireTool(t, "iperf3")
	testbed.CheckAddr(t, addr)
	server.Start(t, "iperf3", "-s", "-1", "-B", addr)
	var r struct {
		Error string `json:"error"`
		End   struct {
			Received struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	args := []string{"iperf3", "-c", addr, "-t", itoa(seconds), "-J"}
	if reverse {
		args = append(args, "-R")
	}
	var out string
	var err error
	// Until the server listens: iperf3 -J says "unable to connect" in its
	// JSON, and may still exit 0.
	for i := 0; i < 50; i++ {
		r.Error = ""
		out, err = client.TryFor(time.Duration(seconds)*time.Second+testbed.CommandTimeout, args...)
		if jerr := json.Unmarshal([]byte(out), &r); jerr == nil && !strings.Contains(r.Error, "unable to connect") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || r.Error != "" || r.End.Received.BitsPerSecond == 0 {
		t.Fatalf("iperf3 to %s: %v %s\n%s", addr, err, r.Error, out)
	}
	return r.End.Received.BitsPerSecond / 1e9
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// stopped sends SIGTERM to the plug and checks it exits 0 with its TAP
// gone from its namespace.
func stopped(t *testing.T, ns *testbed.Netns, p *testbed.Proc) {
	t.Helper()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("vknetplug exited before SIGTERM (%v):\n%s", p.Wait(0), p.Output())
	}
	if err := p.Wait(5 * time.Second); err != nil {
		t.Errorf("vknetplug on SIGTERM: %v\n%s", err, p.Output())
	}
	if code := p.ExitCode(); code != 0 {
		t.Errorf("vknetplug exited %d on SIGTERM, want 0:\n%s", code, p.Output())
	}
	if show, ok := ns.LinkShow("vkplug0"); ok {
		t.Errorf("vkplug0 still exists in %s after SIGTERM:\n%s", ns.Name, show)
	}
}
