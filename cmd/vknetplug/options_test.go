package main

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	for _, c := range []struct {
		args []string
		want options
	}{
		{nil, options{socket: defaultSocket, tapName: defaultTAP, mtu: 1500}},
		{[]string{"198.18.0.2/16"}, options{socket: defaultSocket, tapName: defaultTAP, mtu: 1500, prefix: netip.MustParsePrefix("198.18.0.2/16")}},
		{[]string{"-p", "/run/x", "-t", "eth1", "--mtu", "9000", "-v", "2001:db8::2/64"},
			options{socket: "/run/x", tapName: "eth1", mtu: 9000, verbose: true, prefix: netip.MustParsePrefix("2001:db8::2/64")}},
		{[]string{"--vhost-user", "/run/v", "198.18.0.3/16"},
			options{socket: defaultSocket, vhostUser: "/run/v", tapName: defaultTAP, mtu: 1500, prefix: netip.MustParsePrefix("198.18.0.3/16")}},
	} {
		o, err := parseArgs(c.args, &bytes.Buffer{})
		if err != nil {
			t.Errorf("%q: %v", c.args, err)
			continue
		}
		if *o != c.want {
			t.Errorf("%q: got %+v, want %+v", c.args, *o, c.want)
		}
	}
}

func TestRunUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"198.18.0.2"}, "has no /bits"},
		{[]string{"198.18.0.2/0"}, "use 1 to 32"},
		{[]string{"198.18.0.2/33"}, "use 1 to 32"},
		{[]string{"224.0.0.1/4"}, "unicast"},
		{[]string{"a/b"}, "is not an address"},
		{[]string{"198.18.0.2/16", "198.18.0.3/16"}, "one address/bits"},
		{[]string{"-p", "/a", "--vhost-user", "/b"}, "give one"},
		{[]string{"--vhost-user", ""}, "--vhost-user needs"},
		{[]string{"-p", ""}, "-p needs"},
		{[]string{"-t", ""}, "-t needs"},
		{[]string{"--mtu", "67"}, "--mtu 67 is out of range"},
		{[]string{"--bogus"}, "unknown flag"},
	} {
		var out, errOut bytes.Buffer
		if code := run(c.args, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), c.want) {
			t.Errorf("%q: status %d, stderr %q; want 2 and %q", c.args, code, errOut.String(), c.want)
		}
	}
}

func TestRunHelpAndVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--help"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "--vhost-user") {
		t.Errorf("--help: status %d, stdout %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"--version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "vknetplug ") {
		t.Errorf("--version: status %d, stdout %q", code, out.String())
	}
}
