//go:build linux

package secure

import (
	"encoding/json"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
)

const (
	// tapName is the daemon's TAP; each daemon has a namespace of its own.
	tapName = "vkt-s0"
	network = "198.18.0.1/16"
)

var tapIP = netip.MustParseAddr("198.18.0.1")

// daemon is a vknetd -d in secure mode, alone in its namespace.
type daemon struct {
	ns     *testbed.Netns
	p      *testbed.Daemon
	tapMAC [6]byte
}

// startDaemon starts vknetd in secure mode on 198.18.0.1/16 with a TAP
// named tapName. IPv6 is off in its namespace before the TAP exists, so the
// host side sends nothing of its own (router solicitations, MLD, DAD) and
// a capture on the TAP holds only what the test caused.
func startDaemon(t *testing.T, extra ...string) *daemon {
	t.Helper()
	testbed.RequireRoot(t)
	testbed.RequireTool(t, "ip", "ping", "socat")
	ns := testbed.NewNetns(t)
	ns.DisableIPv6(t)
	args := append(append([]string{"-t", tapName}, extra...), network)
	d := ns.StartDaemon(t, vknetd, testbed.DaemonConfig{Args: args})
	return &daemon{ns: ns, p: d, tapMAC: ns.LinkMAC(t, tapName)}
}

var clientConnected = regexp.MustCompile(`msg="client connected" port=(\d+)`)

// connectedPorts returns the port numbers of every "client connected" log
// line so far, in order.
func (d *daemon) connectedPorts() []int {
	var ports []int
	for _, m := range clientConnected.FindAllStringSubmatch(d.p.Output(), -1) {
		n, _ := strconv.Atoi(m[1])
		ports = append(ports, n)
	}
	return ports
}

// waitNewPort waits for the daemon to log the connection after the first
// `before` ones and returns its port. Clients are connected one at a time,
// so the next line is the one just dialled.
func (d *daemon) waitNewPort(t *testing.T, before int) int {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		if ports := d.connectedPorts(); len(ports) > before {
			return ports[before]
		}
		if time.Now().After(deadline) {
			t.Fatalf("vknetd logged no new client connection within 5s:\n%s", d.p.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// connect dials a raw Go client and returns it with its port number.
func (d *daemon) connect(t *testing.T) (*testbed.SeqpacketClient, int) {
	t.Helper()
	before := len(d.connectedPorts())
	c := testbed.DialSeqpacket(t, d.p.Sock)
	return c, d.waitNewPort(t, before)
}

// socat starts a socat client with cidr in a namespace of its own and
// returns it with its port number and its TAP's MAC.
func (d *daemon) socat(t *testing.T, cidr string) (*testbed.Netns, *testbed.Proc, int, [6]byte) {
	t.Helper()
	before := len(d.connectedPorts())
	ns, p := testbed.SocatClient(t, d.p.Sock, cidr)
	return ns, p, d.waitNewPort(t, before), ns.LinkMAC(t, testbed.ClientTap)
}

// waitDeparture waits for the daemon to log that port's disconnection; by
// then its MACs and bindings are gone.
func (d *daemon) waitDeparture(t *testing.T, port int) {
	t.Helper()
	want := regexp.MustCompile(`msg="client disconnected" port=` + strconv.Itoa(port) + ` `)
	for deadline := time.Now().Add(5 * time.Second); !want.MatchString(d.p.Output()); {
		if time.Now().After(deadline) {
			t.Fatalf("vknetd did not log port %d's disconnection within 5s:\n%s", port, d.p.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// counters sends SIGUSR1 and returns the counters the daemon logged for
// one live port.
func (d *daemon) counters(t *testing.T, port int) testbed.LogRecord {
	t.Helper()
	return d.p.Counters(t).Port(t, port)
}

// kernelFilter is the drop reason of frames secure mode's kernel filter
// dropped in the sender's sendmsg, before the daemon read them (on by
// default; --no-bpf turns it off).
const kernelFilter = "kernel-filter"

// sameDrops reports whether a port's drop counters match want, where any
// of want's drops may instead be counted as kernel-filter: the kernel
// filter drops part of what the userspace rules would, never anything else.
func sameDrops(got, want map[string]int) bool {
	total := 0
	for r, n := range want {
		total += n
		if got[r] > n {
			return false
		}
	}
	for r, n := range got {
		if _, ok := want[r]; !ok && r != kernelFilter {
			return false
		}
		total -= n
	}
	return total == 0
}

// drops returns the non-zero drop_* counters of a counters line by reason.
func drops(kv testbed.LogRecord) map[string]int {
	m := map[string]int{}
	for k, v := range kv {
		if r, ok := strings.CutPrefix(k, "drop_"); ok {
			n, _ := strconv.Atoi(v)
			m[r] = n
		}
	}
	return m
}

// neighbours returns the IPv4 neighbour table of a link in a namespace:
// address to MAC, for entries that have one.
func neighbours(t *testing.T, ns *testbed.Netns, link string) map[netip.Addr][6]byte {
	t.Helper()
	out, err := exec.Command("ip", "-j", "-4", "-n", ns.Name, "neigh", "show", "dev", link).Output()
	if err != nil {
		t.Fatalf("ip -n %s neigh show dev %s: %v", ns.Name, link, err)
	}
	var entries []struct {
		Dst    string `json:"dst"`
		LLAddr string `json:"lladdr"`
	}
	if err := json.Unmarshal(out, &entries); err != nil {
		t.Fatalf("ip -j neigh: %v: %q", err, out)
	}
	m := map[netip.Addr][6]byte{}
	for _, e := range entries {
		a, err1 := netip.ParseAddr(e.Dst)
		hw, err2 := net.ParseMAC(e.LLAddr)
		if err1 == nil && err2 == nil && len(hw) == 6 {
			m[a] = [6]byte(hw)
		}
	}
	return m
}

// pingStats returns how many echo requests a finished ping sent and how
// many replies it got.
func pingStats(t *testing.T, out string) (sent, received int) {
	t.Helper()
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no summary in ping's output:\n%s", out)
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received
}

// startPing pings the host from a client namespace in the background, every
// 0.2 s, for count requests; the caller waits for it with finishPing.
func startPing(t *testing.T, ns *testbed.Netns, count int) *testbed.Proc {
	t.Helper()
	return ns.Start(t, "ping", "-n", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "1", tapIP.String())
}

// finishPing waits for a ping from startPing and fails the test unless at
// most one request of all went unanswered.
func finishPing(t *testing.T, p *testbed.Proc, count int) {
	t.Helper()
	if err := p.Wait(time.Duration(count)*200*time.Millisecond + 10*time.Second); err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("ping: %v", err)
		}
	}
	sent, got := pingStats(t, p.Output())
	if sent != count || got < count-1 {
		t.Errorf("the legitimate client's ping to the host lost replies during the attack: %d sent, %d received\n%s",
			sent, got, p.Output())
	}
}
