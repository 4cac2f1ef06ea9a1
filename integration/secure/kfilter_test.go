//go:build linux

package secure

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/testbed"
)

// outsideIP is a source no client of 198.18.0.0/16 may use: the kernel
// filter drops frames from it before the daemon reads them.
var outsideIP = netip.MustParseAddr("10.6.6.6")

// startFilterDaemon starts vknetd in secure mode with its files in a
// directory every user may search, so that it may run with --user.
func startFilterDaemon(t *testing.T, wrap []string, extra ...string) *testbed.Daemon {
	t.Helper()
	return startFilterDaemonOf(t, vknetd, wrap, extra...)
}

// startFilterDaemonOf is startFilterDaemon of the binary bin.
func startFilterDaemonOf(t *testing.T, bin string, wrap []string, extra ...string) *testbed.Daemon {
	t.Helper()
	testbed.RequireRoot(t)
	dir := testbed.ShortTempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ns := testbed.NewNetns(t)
	return ns.StartDaemon(t, bin, testbed.DaemonConfig{
		Sock:    filepath.Join(dir, "vknet"),
		Pidfile: filepath.Join(dir, "vknetd.pid"),
		Args:    append(append([]string{"-t", tapName}, extra...), network),
		Wrap:    wrap,
	})
}

// The filter is loaded while the daemon is root and attached, and its
// counters read, after it has become --user nobody with CAP_NET_ADMIN
// alone: a spoofing client's frames show as kernel-filter on its port.
func TestKernelFilterUnderUser(t *testing.T) {
	d := startFilterDaemon(t, nil, "--user", "nobody")
	if !strings.Contains(d.Output(), "kernel_filter=true") {
		t.Fatalf("the kernel filter is not on:\n%s", d.Output())
	}
	c := testbed.DialSeqpacket(t, d.Sock)
	// Frames a client sends before the daemon has accepted it (and put the
	// filter on its socket) reach userspace, which drops them all the same:
	// wait for the accept so that these three meet the filter.
	(&daemon{p: d}).waitNewPort(t, 0)
	for i := 0; i < 3; i++ {
		c.Send(t, testbed.IPv4UDP(macA, testbed.Broadcast, outsideIP, tapIP, 40000, 9, nil))
	}
	time.Sleep(100 * time.Millisecond)
	counters := d.Counters(t)
	var found bool
	for _, p := range counters.Ports {
		if p["kind"] != "seqpacket" {
			continue
		}
		found = true
		if p["drop_kernel-filter"] != "3" || p["rx_frames"] != "0" {
			t.Errorf("the spoofing client's port: kernel-filter %q rx_frames %q, want 3 dropped in the kernel and none read",
				p["drop_kernel-filter"], p["rx_frames"])
		}
	}
	if !found {
		t.Fatalf("no client port in the counters:\n%s", d.Output())
	}
}

// Without the privilege to load BPF the daemon says so in one line and
// secure mode goes on in userspace: the spoofed frame is still dropped,
// under its own reason.
func TestKernelFilterFallsBackWithoutPrivilege(t *testing.T) {
	testbed.RequireTool(t, "setpriv")
	noBPF := []string{"setpriv", "--inh-caps=-bpf,-sys_admin", "--bounding-set=-bpf,-sys_admin"}
	d := startFilterDaemon(t, noBPF)
	out := d.Output()
	if n := strings.Count(out, "kernel filter unavailable"); n != 1 || !strings.Contains(out, "kernel_filter=false") {
		t.Fatalf("want one line saying the kernel filter is unavailable and kernel_filter=false, got %d:\n%s", n, out)
	}
	c := testbed.DialSeqpacket(t, d.Sock)
	c.Send(t, testbed.IPv4UDP(macA, testbed.Broadcast, outsideIP, tapIP, 40000, 9, nil))
	time.Sleep(100 * time.Millisecond)
	for _, p := range d.Counters(t).Ports {
		if p["kind"] == "seqpacket" && p["drop_ipv4-src-outside"] != "1" {
			t.Errorf("the spoofed frame was not dropped in userspace: %v", p)
		}
	}
}

// --no-bpf: one line, no warning.
func TestNoBPFFlag(t *testing.T) {
	d := startFilterDaemon(t, nil, "--no-bpf")
	out := d.Output()
	if !strings.Contains(out, "kernel filter off (--no-bpf)") || strings.Contains(out, "unavailable") ||
		!strings.Contains(out, "kernel_filter=false") {
		t.Fatalf("want the --no-bpf line and kernel_filter=false:\n%s", out)
	}
}

// A datagram listener is filtered too; the filter cannot tell which
// client sent what it dropped there, so the count is the listener's.
func TestKernelFilterOnDgramListener(t *testing.T) {
	dir := testbed.ShortTempDir(t)
	listener := filepath.Join(dir, "dgram")
	d := startFilterDaemon(t, nil, "--dgram", listener)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: filepath.Join(dir, "vm")}); err != nil {
		t.Fatal(err)
	}
	spoof := testbed.IPv4UDP(macA, testbed.Broadcast, outsideIP, tapIP, 40000, 9, nil)
	for i := 0; i < 2; i++ {
		if err := unix.Sendto(fd, spoof, 0, &unix.SockaddrUnix{Name: listener}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	c := d.Counters(t)
	if got := c.Global["listener_drop_kernel-filter"]; got != "2" {
		t.Errorf("listener kernel-filter drops %q, want 2:\n%s", got, d.Output())
	}
	if len(c.Ports) != 1 { // the TAP: the spoofer never became a client
		t.Errorf("%d ports, want the TAP alone: the dropped datagrams registered a client", len(c.Ports))
	}
}
