package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vknetd/vknetd/control"
)

func TestParseArgs(t *testing.T) {
	o, err := parseArgs([]string{"ports"}, &bytes.Buffer{})
	if err != nil || o.cmd != "ports" || o.socket != DefaultSocket || o.json {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	o, err = parseArgs([]string{"--socket", "/run/x.ctl", "--json", "macs"}, &bytes.Buffer{})
	if err != nil || o.cmd != "macs" || o.socket != "/run/x.ctl" || !o.json {
		t.Fatalf("--socket --json macs: %+v %v", o, err)
	}
	// Flags after the command, short forms combined.
	o, err = parseArgs([]string{"monitor", "-a", "-w", "/tmp/f.pcap", "-c", "5"}, &bytes.Buffer{})
	if err != nil || o.cmd != "monitor" || !o.all || o.write != "/tmp/f.pcap" || o.count != 5 {
		t.Fatalf("monitor flags: %+v %v", o, err)
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "which command"},
		{[]string{"frob"}, `unknown command "frob"`},
		{[]string{"ports", "macs"}, "one command expected"},
		{[]string{"ports", "--all"}, "--all only goes with monitor"},
		{[]string{"stats", "-w", "x.pcap"}, "--write only goes with monitor"},
		{[]string{"--json", "monitor"}, "-w FILE"},
		{[]string{"monitor", "-c", "0"}, "-c 0"},
		{[]string{"monitor", "-c", "-3"}, "-c -3"},
		{[]string{"--socket", "", "ports"}, "--socket needs a path"},
		{[]string{"--bogus", "ports"}, "bogus"},
	} {
		var out, errOut bytes.Buffer
		if code := run(c.args, &out, &errOut); code != 2 {
			t.Errorf("%q: exit %d, want 2", c.args, code)
		}
		if !strings.Contains(errOut.String(), c.want) || !strings.Contains(errOut.String(), "usage: vknetctl") {
			t.Errorf("%q: stderr %q, want %q and the usage line", c.args, errOut.String(), c.want)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"--help"}, &out, &bytes.Buffer{}); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	for _, w := range []string{"ports", "macs", "bindings", "stats", "monitor", "--socket", "--json", "--all", "--write", "--count", DefaultSocket, "Exit status"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("--help does not mention %q:\n%s", w, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"--version"}, &out, &bytes.Buffer{}); code != 0 || !strings.Contains(out.String(), "control protocol 1") {
		t.Fatalf("--version: %d %q", code, out.String())
	}
}

func TestDaemonUnreachableExits1NamingPathAndFix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vknet.ctl")
	var out, errOut bytes.Buffer
	if code := run([]string{"--socket", path, "stats"}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(errOut.String(), path) || !strings.Contains(errOut.String(), "is vknetd running") {
		t.Fatalf("stderr %q: want the path and the likely fix", errOut.String())
	}
	if out.Len() != 0 {
		t.Fatalf("stdout %q on failure", out.String())
	}
}

func TestJSONListingsAreArrays(t *testing.T) {
	// An empty listing prints [] (not null), so `jq length` and friends
	// work on an idle switch.
	b := &bytes.Buffer{}
	enc := jsonEncoder(b)
	enc.Encode(nonNil([]control.MAC(nil)))
	if strings.TrimSpace(b.String()) != "[]" {
		t.Fatalf("empty listing printed %q", b.String())
	}
}
