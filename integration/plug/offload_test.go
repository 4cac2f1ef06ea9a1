//go:build linux

package plug

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vknetd/vknetd/internal/testbed"
)

// TestTapOffloadIperf runs iperf3 TCP both ways between the daemon's host
// side (its TAP's address, in its namespace) and a namespace plugged with
// vknetplug over SEQPACKET, with the TAP's offloads on (the default: the
// host hands the switch 64 KiB superframes, cut into MTU frames) and with
// --no-offload, in one run. It asserts that every transfer completes and
// that offloads were on when asked for, and logs the rates without
// asserting them. VKNETD_OFFLOAD_SECONDS sets the iperf3 time (3).
//
//	go test -v -run TapOffload ./integration/plug/
func TestTapOffloadIperf(t *testing.T) {
	needRoot(t)
	testbed.RequireTool(t, "iperf3")
	secs := 3
	if s, err := strconv.Atoi(os.Getenv("VKNETD_OFFLOAD_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	type result struct {
		name     string
		up, down float64
	}
	var results []result
	for _, c := range []struct {
		name    string
		args    []string
		offload bool
	}{
		{"TAP offloads on", nil, true},
		{"--no-offload", []string{"--no-offload"}, false},
	} {
		dir := testbed.ShortTempDir(t)
		ns := testbed.NewNetns(t)
		d := ns.StartDaemon(t, vknetd, testbed.DaemonConfig{Sock: filepath.Join(dir, "vknet"),
			Args: append(c.args, host+"/16")})
		if got := strings.Contains(d.Stderr(), "offload=true"); got != c.offload {
			t.Fatalf("%s: daemon logged offload=%v, want %v:\n%s", c.name, got, c.offload, d.Stderr())
		}
		client, p := plugged(t, "-p", d.Sock, "198.18.0.10/16")
		mustPing(t, client, host, c.name)
		r := result{name: c.name}
		r.up = iperf3(t, d.Netns, client, host, secs, false)
		r.down = iperf3(t, d.Netns, client, host, secs, true)
		results = append(results, r)
		// The kernel counts a superframe as one packet: with offloads its
		// packets to the switch average far above an MTU frame.
		out, err := d.Netns.Try("ip", "-s", "-j", "link", "show", "dev", d.TAP)
		var links []struct {
			Stats struct {
				TX struct{ Bytes, Packets float64 }
			} `json:"stats64"`
		}
		if err != nil || json.Unmarshal([]byte(out), &links) != nil || len(links) != 1 || links[0].Stats.TX.Packets == 0 {
			t.Fatalf("ip -s -j link show %s: %v\n%s", d.TAP, err, out)
		}
		avg := links[0].Stats.TX.Bytes / links[0].Stats.TX.Packets
		t.Logf("%s: the host sent the switch %.0f packets of %.0f bytes on average", c.name, links[0].Stats.TX.Packets, avg)
		if c.offload && avg <= 1514 {
			t.Errorf("%s: the host's packets to the switch average %.0f bytes: no superframes", c.name, avg)
		}
		stopped(t, client, p)
		if strings.Contains(d.Stderr(), "level=ERROR") {
			t.Errorf("%s: daemon logged errors:\n%s", c.name, d.Stderr())
		}
	}
	t.Logf("iperf3 -t %d, TCP, secure mode, host side <-> vknetplug -p (client -> host is 'up'):", secs)
	for _, r := range results {
		t.Logf("  %-16s up %6.2f Gbit/s   down %6.2f Gbit/s", r.name, r.up, r.down)
	}
}
