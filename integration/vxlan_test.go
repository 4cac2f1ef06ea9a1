//go:build linux

package integration

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vknetd/vknetd/control"
	"github.com/vknetd/vknetd/internal/testbed"
)

// Two namespaced "hosts" joined by a veth underlay (198.19.0.1/24 and
// 198.19.0.2/24, both in the benchmarking range), each with its own
// vknetd --vxlan and clients on the overlay 198.18.0.0/16.

var (
	underlayA = "198.19.0.1"
	underlayB = "198.19.0.2"
)

// twoHosts creates the two hosts with an underlay of the given MTU. IPv6
// is off in both, so that link-local addresses passing from tentative to
// not do not make the before/after comparisons depend on timing.
func twoHosts(t *testing.T, mtu string) (a, b *testbed.Netns) {
	t.Helper()
	testbed.RequireTool(t, "bridge")
	a, b = testbed.NewNetns(t), testbed.NewNetns(t)
	a.DisableIPv6(t)
	b.DisableIPv6(t)
	a.Run(t, "ip", "link", "add", "vkxu0", "mtu", mtu, "type", "veth", "peer", "name", "vkxu1", "mtu", mtu, "netns", b.Name)
	a.Run(t, "ip", "addr", "add", underlayA+"/24", "dev", "vkxu0")
	a.Run(t, "ip", "link", "set", "vkxu0", "up")
	b.Run(t, "ip", "addr", "add", underlayB+"/24", "dev", "vkxu1")
	b.Run(t, "ip", "link", "set", "vkxu1", "up")
	// The carrier comes up a moment after the link: wait, or a snapshot
	// taken now would differ from a later one by NO-CARRIER alone.
	for _, h := range []struct {
		ns  *testbed.Netns
		dev string
	}{{a, "vkxu0"}, {b, "vkxu1"}} {
		if !waitFor(5*time.Second, func() bool {
			show, _ := h.ns.LinkShow(h.dev)
			return strings.Contains(show, "state UP")
		}) {
			t.Fatalf("underlay %s in %s has no carrier after 5s", h.dev, h.ns.Name)
		}
	}
	return a, b
}

// hostState is what "nothing left behind" compares: links with their
// details, addresses and the bridge forwarding database.
func hostState(t *testing.T, ns *testbed.Netns) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"ip", "-d", "link", "show"}, {"ip", "addr", "show"}, {"bridge", "fdb", "show"}} {
		b.WriteString("$ " + strings.Join(args, " ") + "\n")
		b.WriteString(ns.Run(t, args...))
	}
	return b.String()
}

func sameState(t *testing.T, what, before, after string) {
	t.Helper()
	if before != after {
		t.Errorf("%s: the host's links, addresses or fdb changed:\nbefore:\n%s\nafter:\n%s", what, before, after)
	}
}

func vxlanArgs(peer, addr string, extra ...string) []string {
	return append(append([]string{"--vxlan", "42", "--vxlan-remote", peer}, extra...), addr)
}

// iperf3 runs a 3-second TCP test from client to addr, served from
// server, and returns the receiver's rate in Gbit/s.
func iperf3(t *testing.T, server, client *testbed.Netns, addr string) float64 {
	t.Helper()
	testbed.CheckAddr(t, addr)
	server.Start(t, "iperf3", "-s", "-1", "-B", addr)
	type report struct {
		Error string `json:"error"`
		End   struct {
			Received struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	var r report
	var out string
	var err error
	// Until the server listens: iperf3 -J says "unable to connect" in its
	// JSON, and may still exit 0.
	for i := 0; i < 50; i++ {
		r = report{}
		out, err = client.Try("iperf3", "-c", addr, "-t", "3", "-J")
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

func pingDF(t *testing.T, ns *testbed.Netns, addr string) {
	t.Helper()
	testbed.CheckAddr(t, addr)
	out, err := ns.Try("ping", "-n", "-M", "do", "-s", "1472", "-c", "3", "-i", "0.2", "-W", "2", addr)
	if err != nil || !strings.Contains(out, "3 received") {
		t.Errorf("1500-byte packets with DF from %s to %s did not all cross: %v\n%s", ns.Name, addr, err, out)
	}
}

// The whole story of issue 11: clients on two hosts reach each other,
// the other host and its address across the kernel's VXLAN; 1500-byte
// packets with DF cross; vknetctl says which MACs are remote and what
// went to other hosts; TCP across hosts is at least half as fast as
// through one vknetd; a daemon (host B runs under --user) restarts with
// nothing left behind and traffic recovers.
func TestVXLANTwoHosts(t *testing.T) {
	needRoot(t)
	testbed.RequireTool(t, "iperf3")
	ha, hb := twoHosts(t, "1550")
	beforeA, beforeB := hostState(t, ha), hostState(t, hb)
	group := socketGroup(t).Name
	lookupDropUser(t)

	da := startDaemon(t, ha, testbed.DaemonConfig{Args: vxlanArgs(underlayB, "198.18.0.1/16")})
	db := startDroppingDaemon(t, hb, group, vxlanArgs(underlayA, "198.18.0.2/16")...)
	a1, _ := testbed.SocatClient(t, da.Sock, "198.18.1.1/16")
	a2, _ := testbed.SocatClient(t, da.Sock, "198.18.1.2/16")
	b1, b1proc := testbed.SocatClient(t, db.Sock, "198.18.2.1/16")

	ping(t, a1, "198.18.2.1", 10*time.Second)
	ping(t, b1, "198.18.1.1", 10*time.Second)
	ping(t, a1, "198.18.0.2", 10*time.Second) // the other host's own address
	ping(t, ha, "198.18.2.1", 10*time.Second) // a host to the other host's client
	pingDF(t, a1, "198.18.2.1")
	pingDF(t, b1, "198.18.1.1")

	checkRemoteListing(t, da, b1.LinkMAC(t, testbed.ClientTap), underlayB)
	checkRemoteListing(t, db, a1.LinkMAC(t, testbed.ClientTap), underlayA) // netlink reads under --user

	// Both carry TCP: the ratio is reported, not asserted (timings on
	// these machines vary; the target is measured, see the README).
	oneHost := iperf3(t, a2, a1, "198.18.1.2")
	acrossHosts := iperf3(t, b1, a1, "198.18.2.1")
	if oneHost <= 0 || acrossHosts <= 0 {
		t.Errorf("iperf3 moved nothing: one host %.2f Gbit/s, across hosts %.2f Gbit/s", oneHost, acrossHosts)
	}
	t.Logf("iperf3 -t 3: one host (two clients, one vknetd) %.2f Gbit/s; across hosts (two vknetd, VXLAN) %.2f Gbit/s; ratio %.2f (target 0.5)",
		oneHost, acrossHosts, acrossHosts/oneHost)

	// Restart host B's daemon: everything it made goes, then comes back.
	if code := db.stop(); code != 0 {
		t.Fatalf("vknetd on host B exited with %d; stderr:\n%s", code, db.Stderr())
	}
	if err := b1proc.Wait(5 * time.Second); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("host B's client did not see its switch go")
	}
	sameState(t, "host B after its vknetd (--user) stopped", beforeB, hostState(t, hb))
	db = startDroppingDaemon(t, hb, group, vxlanArgs(underlayA, "198.18.0.2/16")...)
	b2, _ := testbed.SocatClient(t, db.Sock, "198.18.2.2/16")
	ping(t, b2, "198.18.1.1", 10*time.Second)
	ping(t, a1, "198.18.2.2", 10*time.Second)
	pingDF(t, a1, "198.18.2.2")

	if code := db.stop(); code != 0 {
		t.Errorf("vknetd on host B exited with %d; stderr:\n%s", code, db.Stderr())
	}
	if code := da.stop(); code != 0 {
		t.Errorf("vknetd on host A exited with %d; stderr:\n%s", code, da.Stderr())
	}
	sameState(t, "host B at the end", beforeB, hostState(t, hb))
	sameState(t, "host A after its vknetd stopped", beforeA, hostState(t, ha))
}

// checkRemoteListing asks host A's control socket (what vknetctl does)
// whether remote is listed as behind the VXLAN device, and whether the
// stats count traffic to and from the other host.
func checkRemoteListing(t *testing.T, d *daemon, remote [6]byte, vtep string) {
	t.Helper()
	c, err := control.Dial(d.Sock + ".ctl")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	macs, err := c.MACs()
	if err != nil {
		t.Fatal(err)
	}
	want := net.HardwareAddr(remote[:]).String()
	found := false
	for _, m := range macs {
		if m.MAC == want {
			found = true
			if m.Kind != "tap" || m.Via != "vkvx42" || m.VTEP != vtep {
				t.Errorf("remote client's MAC listed as %+v; want on the TAP, via vkvx42, vtep %s", m, vtep)
			}
		} else if m.Via != "" && m.Kind != "tap" {
			t.Errorf("a client's MAC is listed as remote: %+v", m)
		}
	}
	if !found {
		t.Errorf("remote client's MAC %s is not in the MAC table: %+v", want, macs)
	}
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if r := st.Traffic.Remote; r == nil || r.RxFrames == 0 || r.TxFrames == 0 {
		t.Errorf("stats: remote traffic %+v; want frames counted both ways", r)
	}
}

// An underlay too small for --mtu plus VXLAN's 50 bytes: an explicit
// --mtu is refused with what to raise and what to pass, leaving nothing;
// the default MTU is fitted, with a warning that says so.
func TestVXLANMTUNeedsRoomOnTheUnderlay(t *testing.T) {
	needRoot(t)
	ha, _ := twoHosts(t, "1500")
	before := hostState(t, ha)

	_, err := tryStartDaemon(t, ha, testbed.DaemonConfig{Args: vxlanArgs(underlayB, "198.18.0.1/16", "--mtu", "1500")})
	var se *testbed.StartError
	if !errors.As(err, &se) {
		t.Fatalf("vknetd --mtu 1500 over a 1500-byte underlay started (or hung): %v", err)
	}
	for _, w := range []string{"--mtu 1500", "vkxu0", "raise the underlay MTU to 1550", "--mtu 1450"} {
		if !strings.Contains(se.Stderr, w) {
			t.Errorf("refusal does not say %q:\n%s", w, se.Stderr)
		}
	}
	sameState(t, "after the refused start", before, hostState(t, ha))

	d := startDaemon(t, ha, testbed.DaemonConfig{Args: vxlanArgs(underlayB, "198.18.0.1/16")})
	d.waitLog(5*time.Second, "--mtu lowered from 1500 to 1450 to fit VXLAN (50 bytes of overhead) over an underlay of MTU 1500; guests must use MTU 1450, or raise the underlay MTU to 1550 on every host")
	if show, _ := ha.LinkShow(d.TAP); !strings.Contains(show, " mtu 1450 ") {
		t.Errorf("TAP %s after fitting:\n%s\nwant mtu 1450", d.TAP, show)
	}
	// A guest that kept MTU 1500 loses its largest frames at the switch,
	// counted, not somewhere in the network unseen.
	c, _ := testbed.SocatClient(t, d.Sock, "198.18.1.1/16")
	ping(t, c, "198.18.0.1", 10*time.Second)
	if out, err := c.Try("ping", "-n", "-M", "do", "-s", "1472", "-c", "1", "-W", "1", "198.18.0.1"); err == nil {
		t.Errorf("a 1500-byte packet crossed a switch fitted to MTU 1450:\n%s", out)
	}
	oversize := false
	for _, p := range d.Counters(t).Ports {
		if p["kind"] == "seqpacket" && p["drop_oversize"] != "" && p["drop_oversize"] != "0" {
			oversize = true
		}
	}
	if !oversize {
		t.Errorf("the client's oversized frame is not counted as drop_oversize: %+v", d.Counters(t).Ports)
	}
	if code := d.stop(); code != 0 {
		t.Fatalf("vknetd exited with %d; stderr:\n%s", code, d.Stderr())
	}
	sameState(t, "after the fitted daemon stopped", before, hostState(t, ha))
}
