package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// CommandTimeout bounds Run and Try, so a hung command fails its test instead of
// stalling the whole suite until go test's own timeout, which skips every cleanup.
const CommandTimeout = 30 * time.Second

// Netns is a network namespace created for one test and removed at its cleanup.
type Netns struct {
	Name string
}

var nsCounter atomic.Uint64

// nsName matches the names NewNetns gives, so that stale ones can be recognised.
var nsName = regexp.MustCompile(`^vkt-([0-9]+)-[0-9]+$`)

var reapOnce sync.Once

// NewNetns creates a network namespace named vkt-<pid>-<n> with its loopback up. At
// cleanup, which runs even when the test fails, every process still inside gets
// SIGTERM, then SIGKILL, and the namespace is deleted; its interfaces go with it.
//
// The first call in a test binary also removes namespaces left by earlier test
// processes that were killed before their cleanups ran (vkt-<pid>-<n> whose pid no
// longer exists).
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	RequireRoot(t)
	RequireTool(t, "ip")
	reapOnce.Do(func() { reapStale(t) })

	n := &Netns{Name: fmt.Sprintf("vkt-%d-%d", os.Getpid(), nsCounter.Add(1))}
	if out, err := runTimeout("ip", "netns", "add", n.Name); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", n.Name, err, out)
	}
	t.Cleanup(func() {
		if err := n.remove(); err != nil {
			t.Errorf("removing network namespace %s: %v", n.Name, err)
		}
	})
	if out, err := runTimeout("ip", "-n", n.Name, "link", "set", "lo", "up"); err != nil {
		t.Fatalf("ip -n %s link set lo up: %v\n%s", n.Name, err, out)
	}
	return n
}

// Command returns a command that runs inside the namespace, for callers that need to
// set it up themselves; Run, Try and Start cover the usual cases.
func (n *Netns) Command(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Try runs a command inside the namespace and returns its combined output.
// It is killed after CommandTimeout.
func (n *Netns) Try(args ...string) (string, error) {
	return n.TryFor(CommandTimeout, args...)
}

// TryFor is Try for a command that may rightly take longer than
// CommandTimeout (a long measurement): it is killed after timeout.
func (n *Netns) TryFor(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := n.Command(ctx, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s: %w", n.Name, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// Run runs a command inside the namespace and fails the test, showing the output, if
// it does not exit 0.
func (n *Netns) Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.Try(args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// Start runs a command in the background inside the namespace; see Proc. It is stopped
// at cleanup (before the namespace is removed), and its output is logged if the test
// failed.
func (n *Netns) Start(t testing.TB, args ...string) *Proc {
	t.Helper()
	return start(t, false, nil, n.Name+": "+strings.Join(args, " "), "ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// StartInput is Start for a command driven through its standard input, such
// as dpdk-testpmd -i: it reads in (an *os.File is handed over as is; the
// caller closes its other end to say end of input).
func (n *Netns) StartInput(t testing.TB, in io.Reader, args ...string) *Proc {
	t.Helper()
	return start(t, false, in, n.Name+": "+strings.Join(args, " "), "ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// StartSplit is Start for a command whose stdout and stderr the test reads apart, such
// as vknetd -d, which prints its TAP's name on stdout and logs on stderr. Output still
// holds both, but where the two interleave is only as exact as two pipes allow.
func (n *Netns) StartSplit(t testing.TB, args ...string) *Proc {
	t.Helper()
	return start(t, true, nil, n.Name+": "+strings.Join(args, " "), "ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Pids returns the processes running in the namespace.
func (n *Netns) Pids() []int { return netnsPids(n.Name) }

// LinkShow returns `ip -d link show` of a link in the namespace, and whether the link
// exists.
func (n *Netns) LinkShow(name string) (string, bool) {
	out, err := exec.Command("ip", "-n", n.Name, "-d", "link", "show", "dev", name).CombinedOutput()
	return string(out), err == nil
}

// HasFlag reports whether the <...> flags of `ip link show` output include flag, e.g.
// UP (administratively up; LOWER_UP would also need a reader on a TAP).
func HasFlag(show, flag string) bool {
	open, end := strings.IndexByte(show, '<'), strings.IndexByte(show, '>')
	if open < 0 || end < open {
		return false
	}
	for _, f := range strings.Split(show[open+1:end], ",") {
		if f == flag {
			return true
		}
	}
	return false
}

// WaitLink waits until the namespace has a link called name, failing the test after
// timeout.
func (n *Netns) WaitLink(t testing.TB, name string, timeout time.Duration) {
	t.Helper()
	var out []byte
	var err error
	for deadline := time.Now().Add(timeout); ; {
		out, err = exec.Command("ip", "-n", n.Name, "link", "show", "dev", name).CombinedOutput()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("link %s did not appear in %s within %v: %s", name, n.Name, timeout, strings.TrimSpace(string(out)))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LinkMAC returns the hardware address of a link in the namespace.
func (n *Netns) LinkMAC(t testing.TB, name string) [6]byte {
	t.Helper()
	out, err := exec.Command("ip", "-j", "-n", n.Name, "link", "show", "dev", name).Output()
	if err != nil {
		t.Fatalf("ip -n %s link show dev %s: %v", n.Name, name, err)
	}
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j -n %s link show dev %s: unexpected output %q (%v)", n.Name, name, out, err)
	}
	hw, err := net.ParseMAC(links[0].Address)
	if err != nil || len(hw) != 6 {
		t.Fatalf("link %s in %s has address %q, not an Ethernet MAC", name, n.Name, links[0].Address)
	}
	return [6]byte(hw)
}

// Ping sends count echo requests to addr (which must be in BenchNet) from inside the
// namespace, 0.2 s apart. ok is ping's own verdict: at least one reply came back.
// Tests that need every reply should read the "received" count in out.
func (n *Netns) Ping(t testing.TB, addr string, count int) (ok bool, out string) {
	t.Helper()
	RequireTool(t, "ping")
	CheckAddr(t, addr)
	c := strconv.Itoa(count)
	// -w bounds the whole run, so a dead peer costs seconds, not count timeouts.
	out, err := n.Try("ping", "-n", "-c", c, "-i", "0.2", "-W", "1", "-w", strconv.Itoa(count+2), addr)
	return err == nil, out
}

// DisableIPv6 turns IPv6 off in the namespace, for links created afterwards too. A new
// link otherwise sends router solicitations, MLD reports and DAD probes on its own,
// which a test counting frames would see as stray traffic.
func (n *Netns) DisableIPv6(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		return // no IPv6 in this kernel: already quiet
	}
	n.Run(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6")
}

// remove stops whatever still runs in the namespace, then deletes it. Processes get
// SIGTERM first so a daemon can remove its socket and pidfile.
func (n *Netns) remove() error {
	return removeNetns(n.Name)
}

func removeNetns(name string) error {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		pids := netnsPids(name)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			if pid != os.Getpid() {
				_ = syscall.Kill(pid, sig)
			}
		}
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && len(netnsPids(name)) > 0; {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if out, err := runTimeout("ip", "netns", "delete", name); err != nil {
		return fmt.Errorf("ip netns delete %s: %v: %s", name, err, strings.TrimSpace(out))
	}
	return nil
}

func netnsPids(name string) []int {
	out, err := runTimeout("ip", "netns", "pids", name)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// reapStale removes namespaces that NewNetns created in test processes that no longer
// exist: a test binary killed by go test's -timeout never runs its cleanups.
func reapStale(t testing.TB) {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		m := nsName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			continue // its creator is alive (or we cannot tell): not ours to remove
		}
		if err := removeNetns(e.Name()); err != nil {
			t.Logf("testbed: removing stale namespace: %v", err)
		} else {
			t.Logf("testbed: removed stale namespace %s left by a killed test process", e.Name())
		}
	}
}

func runTimeout(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}
