package main

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/vknetd/vknetd/engine"
	"github.com/vknetd/vknetd/internal/cli"
	"github.com/vknetd/vknetd/secure"
)

func TestParseArgsManualCommandLine(t *testing.T) {
	o, err := parseArgs([]string{"-dU", "-b", "br7", "-p", "/tmp/s", "-i", "/tmp/p", "-t", "tap9", "198.18.0.1/16"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !o.debug || !o.unsecure || o.client || o.bridge != "br7" || o.socket != "/tmp/s" ||
		o.pidfile != "/tmp/p" || o.tapName != "tap9" || o.prefix.String() != "198.18.0.1/16" {
		t.Fatalf("parsed %+v", o)
	}
	o, err = parseArgs([]string{"198.18.0.1/15"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.socket != "/var/run/vknet" || o.pidfile != "/var/run/vknetd.pid" || o.group != "vknet" ||
		o.mtu != 1500 || o.macAge != 300*time.Second || o.debug || o.unsecure ||
		o.userMACs != 4096 || o.userClients != 256 || o.remoteMACs != 4096 {
		t.Fatalf("defaults %+v", o)
	}
	// -c needs neither CIDR nor secure-mode arguments; flags may follow the operand.
	if o, err = parseArgs([]string{"-c", "-p", "/x"}, &bytes.Buffer{}); err != nil || !o.client {
		t.Fatalf("-c: %+v %v", o, err)
	}
	if o, err = parseArgs([]string{"198.18.0.1/16", "-d"}, &bytes.Buffer{}); err != nil || !o.debug {
		t.Fatalf("interspersed flag: %v", err)
	}
	if o, err = parseArgs([]string{"-U"}, &bytes.Buffer{}); err != nil || o.prefix.IsValid() {
		t.Fatalf("-U without CIDR: %v", err)
	}
	for _, age := range []struct {
		in   string
		want time.Duration
	}{{"60", time.Minute}, {"2.5", 2500 * time.Millisecond}, {"5m", 5 * time.Minute}} {
		o, err := parseArgs([]string{"--mac-age", age.in, "198.18.0.1/16"}, &bytes.Buffer{})
		if err != nil || o.macAge != age.want {
			t.Fatalf("--mac-age %s: %v %v", age.in, o.macAge, err)
		}
	}
	if o, err = parseArgs([]string{"--ipv6", "2001:db8:1::/64", "198.18.0.1/16"}, &bytes.Buffer{}); err != nil || o.ipv6.String() != "2001:db8:1::/64" {
		t.Fatalf("--ipv6: %v", err)
	}
	if o.ipSource != secure.IPSourceFirstUse {
		t.Fatalf("--ip-source defaults to %v, want first-use", o.ipSource)
	}
	if o.workers != 1 {
		t.Fatalf("--workers defaults to %d, want 1", o.workers)
	}
	for _, w := range []struct {
		in   string
		want int
	}{{"2", 2}, {"auto", engine.AutoWorkers()}} {
		if o, err := parseArgs([]string{"--workers", w.in, "-U"}, &bytes.Buffer{}); err != nil || o.workers != w.want {
			t.Fatalf("--workers %s: %d %v", w.in, o.workers, err)
		}
	}
	if o.busyPoll != 0 {
		t.Fatalf("--busy-poll defaults to %v, want 0 (off)", o.busyPoll)
	}
	if o, err := parseArgs([]string{"--busy-poll", "50us", "-U"}, &bytes.Buffer{}); err != nil || o.busyPoll != 50*time.Microsecond {
		t.Fatalf("--busy-poll 50us: %v %v", o.busyPoll, err)
	}
	if o.coalesce != 20*time.Microsecond {
		t.Fatalf("--coalesce defaults to %v, want 20us", o.coalesce)
	}
	if o, err := parseArgs([]string{"--coalesce", "0", "-U"}, &bytes.Buffer{}); err != nil || o.coalesce != 0 {
		t.Fatalf("--coalesce 0: %v %v", o.coalesce, err)
	}
	if o, err = parseArgs([]string{"--ip-source", "dhcp", "198.18.0.1/16"}, &bytes.Buffer{}); err != nil || o.ipSource != secure.IPSourceDHCP {
		t.Fatalf("--ip-source dhcp: %v %v", o, err)
	}
}

func TestParseArgsUserAddresses(t *testing.T) {
	// --user-ips defaults to a quarter of the host addresses, at least
	// --port-ips, at most --mac-max.
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"198.18.7.1/24"}, 63},
		{[]string{"198.18.0.1/15"}, 16384}, // a quarter is 32767: --mac-max
		{[]string{"--mac-max", "100000", "198.18.0.1/16"}, 16383},
		{[]string{"198.18.7.1/28"}, 16},                   // a quarter is 3: --port-ips
		{[]string{"--port-ips", "2", "198.18.7.1/30"}, 2}, // 2 hosts
		{[]string{"--user-ips", "5", "198.18.7.1/24"}, 5},
	} {
		o, err := parseArgs(tc.args, &bytes.Buffer{})
		if err != nil || o.userIPs != tc.want {
			t.Errorf("%q: --user-ips %d (%v), want %d", tc.args, o.userIPs, err, tc.want)
		}
	}
	o, err := parseArgs([]string{"--user-net", "root=198.18.7.0/26", "--user-net", "4343=198.18.7.128/25", "--user-net", "4343=198.18.7.64/27", "198.18.7.1/24"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := []secure.UserNet{
		{UID: 0, Prefix: netip.MustParsePrefix("198.18.7.0/26"), Given: "root=198.18.7.0/26"},
		{UID: 4343, Prefix: netip.MustParsePrefix("198.18.7.128/25"), Given: "4343=198.18.7.128/25"},
		{UID: 4343, Prefix: netip.MustParsePrefix("198.18.7.64/27"), Given: "4343=198.18.7.64/27"},
	}
	if !slices.Equal(o.userNets, want) {
		t.Fatalf("--user-net parsed as %v, want %v", o.userNets, want)
	}
}

func TestParseArgsErrorsNameValueAndFix(t *testing.T) {
	cases := []struct {
		args []string
		want []string // every fragment must appear in the message
	}{
		{[]string{}, []string{"secure mode", "address/cidrbits", "-U"}},
		{[]string{"198.18.0.1/0"}, []string{"/0", "198.18.0.1/0", "1 to 32"}},
		{[]string{"198.18.0.1/33"}, []string{"/33", "1 to 32"}},
		{[]string{"198.18.0/16"}, []string{`"198.18.0/16"`, "198.18.0.1/16"}},
		{[]string{"198.18.0.1"}, []string{`"198.18.0.1"`, "no /cidrbits"}},
		{[]string{"198.18.0.1/x"}, []string{`"x"`, "not a number"}},
		{[]string{"2001:db8::1/64"}, []string{"IPv4"}},
		{[]string{"0.0.0.0/8"}, []string{"0.0.0.0", "unicast"}},
		{[]string{"198.18.0.1/16", "198.19.0.1/16"}, []string{"one address/cidrbits"}},
		{[]string{"--mtu", "40", "198.18.0.1/16"}, []string{"--mtu 40", "68 to 65535"}},
		{[]string{"--workers", "0", "-U"}, []string{"--workers 0", "auto"}},
		{[]string{"--workers", "many", "-U"}, []string{"--workers many", "1 to 64"}},
		{[]string{"--busy-poll", "2s", "-U"}, []string{"--busy-poll 2s", "50us"}},
		{[]string{"--busy-poll", "-1ms", "-U"}, []string{"--busy-poll -1ms", "0 (off)"}},
		{[]string{"--coalesce", "2ms", "-U"}, []string{"--coalesce 2ms", "20us"}},
		{[]string{"--coalesce", "-1us", "-U"}, []string{"--coalesce -1µs", "0 (off)"}},
		{[]string{"--mac-age", "0", "198.18.0.1/16"}, []string{"--mac-age"}},
		{[]string{"--mac-age", "soon", "198.18.0.1/16"}, []string{"mac-age", "seconds"}},
		{[]string{"--port-macs", "0", "198.18.0.1/16"}, []string{"--port-macs 0"}},
		{[]string{"--port-ips", "0", "198.18.0.1/16"}, []string{"--port-ips 0"}},
		{[]string{"--user-macs", "20000", "198.18.0.1/16"}, []string{"--user-macs 20000", "--mac-max (16384)"}},
		{[]string{"--remote-macs", "0", "198.18.0.1/16"}, []string{"--remote-macs 0", "--mac-max (16384)"}},
		{[]string{"--mac-max", "100", "--port-macs", "10", "--remote-macs", "101", "198.18.0.1/16"}, []string{"--remote-macs 101", "--mac-max (100)"}},
		{[]string{"--user-clients", "0", "198.18.0.1/16"}, []string{"--user-clients 0", "--max-clients"}},
		{[]string{"--ipv6", "::/0", "198.18.0.1/16"}, []string{"::/0"}},
		{[]string{"--ipv6", "198.18.0.0/16", "198.18.0.1/16"}, []string{"IPv6 prefix"}},
		{[]string{"--user-ips", "0", "198.18.0.1/16"}, []string{"--user-ips 0", "--mac-max (16384)"}},
		{[]string{"-U", "--user-ips", "4"}, []string{"--user-ips", "secure mode"}},
		{[]string{"-U", "--user-net", "1=198.18.0.0/24"}, []string{"--user-net", "secure mode"}},
		{[]string{"--user-net", "198.18.7.0/25", "198.18.7.1/24"}, []string{"--user-net 198.18.7.0/25", "USER=CIDR"}},
		{[]string{"--user-net", "7=198.18.7.0", "198.18.7.1/24"}, []string{"--user-net 7=198.18.7.0", `"198.18.7.0"`}},
		{[]string{"--user-net", "no-such-user-i21=198.18.7.0/25", "198.18.7.1/24"}, []string{"--user-net no-such-user-i21=198.18.7.0/25", "no such user"}},
		{[]string{"--user-net", "7=198.18.8.0/25", "198.18.7.1/24"}, []string{"--user-net 7=198.18.8.0/25", "not inside", "198.18.7.0/24"}},
		{[]string{"--user-net", "7=198.18.7.0/25", "--user-net", "8=198.18.7.64/26", "198.18.7.1/24"},
			[]string{"--user-net 7=198.18.7.0/25 overlaps --user-net 8=198.18.7.64/26"}},
		{[]string{"--ip-source", "static", "198.18.0.1/16"}, []string{"--ip-source", `"static"`, "first-use", "dhcp"}},
		{[]string{"--dhcp-server", "52:54:00:12:34:56", "198.18.0.1/16"}, []string{"--dhcp-server", "--ip-source dhcp"}},
		{[]string{"--ip-source", "dhcp", "--dhcp-server", "server1", "198.18.0.1/16"}, []string{"--dhcp-server", `"server1"`, "52:54:00:12:34:56"}},
		{[]string{"-U", "--ip-source", "dhcp"}, []string{"--ip-source dhcp", "secure mode"}},
		{[]string{"-x"}, []string{"-x"}},
		{[]string{"-c", "--user", "vknetd"}, []string{"--user vknetd", "daemon"}},
	}
	for _, c := range cases {
		_, err := parseArgs(c.args, &bytes.Buffer{})
		var ue cli.UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: error %v is not a usage error (exit status 2)", c.args, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: message %q lacks %q", c.args, err, w)
			}
		}
	}
}

func TestRunExitStatuses(t *testing.T) {
	var out, errOut bytes.Buffer
	if got := run([]string{"198.18.0.1/0"}, &out, &errOut); got != 2 {
		t.Fatalf("bad CIDR: exit %d, want 2", got)
	}
	if !strings.Contains(errOut.String(), "vknetd: cidrbits /0") || !strings.Contains(errOut.String(), "usage:") {
		t.Fatalf("stderr: %q", errOut.String())
	}
	out.Reset()
	if got := run([]string{"--version"}, &out, &errOut); got != 0 || !strings.HasPrefix(out.String(), "vknetd ") {
		t.Fatalf("--version: %d %q", got, out.String())
	}
	out.Reset()
	errOut.Reset()
	if got := run([]string{"--help"}, &out, &errOut); got != 0 {
		t.Fatalf("--help: exit %d", got)
	}
	help := out.String()
	for _, w := range []string{"usage: vknetd [-cdU]", "--mac-age", "--port-macs", "--group", "Secure mode", "SIGHUP", "SIGUSR1"} {
		if !strings.Contains(help, w) {
			t.Errorf("--help lacks %q", w)
		}
	}
}

func TestSecondsValue(t *testing.T) {
	var v secondsValue
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.Var(&v, "age", "")
	if err := fs.Parse([]string{"--age", "90s"}); err != nil || time.Duration(v) != 90*time.Second {
		t.Fatalf("%v %v", v, err)
	}
}

// FuzzParseCIDR: no input panics, and whatever is accepted is an IPv4 host
// address with 1 to 32 bits that reads back as written.
func FuzzParseCIDR(f *testing.F) {
	for _, s := range []string{"198.18.0.1/16", "198.18.0.1/0", "198.18.0.1/33", "198.18.0/16", "::1/64",
		"0.0.0.0/8", "255.255.255.255/32", "198.18.0.1/+16", "198.18.0.1/016", "1.2.3.4/ 8", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parseCIDR(s)
		if err != nil {
			var ue cli.UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("%q: %v is not a usage error", s, err)
			}
			return
		}
		if !p.Addr().Is4() || p.Bits() < 1 || p.Bits() > 32 || p.Addr().IsUnspecified() {
			t.Fatalf("%q accepted as %v", s, p)
		}
		if again, err := parseCIDR(p.String()); err != nil || again != p {
			t.Fatalf("%q -> %v does not read back: %v %v", s, p, again, err)
		}
	})
}

func TestParseArgsDHCPServers(t *testing.T) {
	o, err := parseArgs([]string{"--ip-source", "dhcp", "--dhcp-server", "52:54:00:12:34:56", "--dhcp-server", "02:00:00:00:00:67", "198.18.7.1/24"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := [][6]byte{{0x52, 0x54, 0, 0x12, 0x34, 0x56}, {2, 0, 0, 0, 0, 0x67}}
	if !slices.Equal(o.dhcpServers, want) {
		t.Fatalf("--dhcp-server parsed as %v, want %v", o.dhcpServers, want)
	}
}
