// Package testbed holds the helpers integration tests share: a fresh build of vknetd,
// skipping cleanly when the machine cannot run them, network namespaces that always go
// away, processes and vknetd daemons inside them that are always stopped, socat and raw
// SEQPACKET clients of the switch, and frame builders.
//
// Network safety is built in rather than left to each test: every namespace is created
// here with a unique name (vkt-<pid>-<n>), removed by t.Cleanup even when the test
// fails, and helpers that assign or ping addresses refuse anything outside
// 198.18.0.0/15, the range reserved for benchmarking network devices (RFC 2544). Nothing
// here touches the machine's own interfaces.
//
// Typical use:
//
//	func TestMain(m *testing.M) { os.Exit(testbed.RunWithVknetd(m, "mypkg", &vknetd)) }
//
//	testbed.RequireRoot(t)
//	d := testbed.NewNetns(t).StartDaemon(t, vknetd, testbed.DaemonConfig{Args: []string{"198.18.0.1/16"}})
//	c1, _ := testbed.SocatClient(t, d.Sock, "198.18.0.2/16")
//	if ok, out := c1.Ping(t, "198.18.0.1", 3); !ok { t.Fatalf("ping: %s", out) }
package testbed

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// BenchNet is the only address range the helpers accept (RFC 2544's benchmarking range).
var BenchNet = netip.MustParsePrefix("198.18.0.0/15")

// RequireRoot skips the test unless it runs as root on Linux, which network namespaces
// and TAP devices need.
func RequireRoot(t testing.TB) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skipf("integration test needs Linux network namespaces, not %s", runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		t.Skip("integration test needs root and network namespaces: run as root (CI does)")
	}
}

// toolPackages names the Debian package for the tools tests use, for the skip message.
var toolPackages = map[string]string{
	"ip":                 "iproute2",
	"ping":               "iputils-ping",
	"socat":              "socat",
	"tcpdump":            "tcpdump",
	"iperf3":             "iperf3",
	"dnsmasq":            "dnsmasq",
	"sysctl":             "procps",
	"vde_switch":         "vde2",
	"vde_plug2tap":       "vde2",
	"qemu-system-x86_64": "qemu-system-x86",
	"setpriv":            "util-linux",
	"dpdk-testpmd":       "dpdk-dev",
}

// RequireTool skips the test when any of the named programs is not on PATH, saying
// which package to install.
func RequireTool(t testing.TB, names ...string) {
	t.Helper()
	var missing, pkgs []string
	for _, name := range names {
		if _, err := exec.LookPath(name); err == nil {
			continue
		}
		missing = append(missing, name)
		pkg := toolPackages[name]
		if pkg == "" {
			pkg = name
		}
		pkgs = append(pkgs, pkg)
	}
	if len(missing) > 0 {
		t.Skipf("integration test needs %s: apt-get install %s", strings.Join(missing, ", "), strings.Join(pkgs, " "))
	}
}

// CheckAddr fails the test unless s, an address or address/prefix, lies in BenchNet.
// Helpers call it before configuring or pinging an address so that a typo cannot send
// traffic toward a real network.
func CheckAddr(t testing.TB, s string) netip.Addr {
	t.Helper()
	a, err := parseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func parseAddr(s string) (netip.Addr, error) {
	var a netip.Addr
	var err error
	if strings.Contains(s, "/") {
		var p netip.Prefix
		p, err = netip.ParsePrefix(s)
		a = p.Addr()
	} else {
		a, err = netip.ParseAddr(s)
	}
	if err != nil {
		return a, fmt.Errorf("testbed: %v", err)
	}
	if !BenchNet.Contains(a) {
		return a, fmt.Errorf("testbed: address %s is outside %s: tests use only the benchmarking range", s, BenchNet)
	}
	return a, nil
}
