package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/vknetd/vknetd/internal/cli"
)

func TestParseArgsControlMetricsWrite(t *testing.T) {
	o, err := parseArgs([]string{"-p", "/run/x/vknet", "198.18.0.1/16"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.control != "/run/x/vknet.ctl" || o.metrics != "" {
		t.Fatalf("defaults: control %q metrics %q, want the -p path plus .ctl and no metrics", o.control, o.metrics)
	}
	o, err = parseArgs([]string{"--control", "/run/ctl", "--metrics", "127.0.0.1:9477", "198.18.0.1/16"}, &bytes.Buffer{})
	if err != nil || o.control != "/run/ctl" || o.metrics != "127.0.0.1:9477" {
		t.Fatalf("--control/--metrics: %+v %v", o, err)
	}
	if o, err = parseArgs([]string{"-c", "-w", "/tmp/f.pcap"}, &bytes.Buffer{}); err != nil || o.write != "/tmp/f.pcap" {
		t.Fatalf("-c -w: %+v %v", o, err)
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"-w", "/tmp/f.pcap", "198.18.0.1/16"}, []string{"-w /tmp/f.pcap", "add -c", "vknetctl monitor"}},
		{[]string{"--metrics", "9477", "198.18.0.1/16"}, []string{"--metrics", "9477", "HOST:PORT", "127.0.0.1:9477"}},
		{[]string{"--metrics", "127.0.0.1:0", "198.18.0.1/16"}, []string{"--metrics", "port", "1 to 65535"}},
		{[]string{"--metrics", "127.0.0.1:http", "198.18.0.1/16"}, []string{"--metrics", "port \"http\""}},
		{[]string{"--metrics", "a b:80", "198.18.0.1/16"}, []string{"--metrics", "host \"a b\""}},
		{[]string{"-p", "/s", "--control", "/s", "198.18.0.1/16"}, []string{"--control /s", "-p", "its own path"}},
		{[]string{"--stream", "/q", "--control", "/q", "198.18.0.1/16"}, []string{"/q", "--control", "--stream"}},
	} {
		_, err := parseArgs(c.args, &bytes.Buffer{})
		if _, ok := err.(cli.UsageError); !ok {
			t.Errorf("%q: got %v, want a usage error (exit 2)", c.args, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q does not mention %q", c.args, err, w)
			}
		}
	}
}
