package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseArgsVXLAN(t *testing.T) {
	o, err := parseArgs([]string{"--vxlan", "42", "--vxlan-remote", "198.19.0.2", "--vxlan-remote", "198.19.0.3",
		"--vxlan-local", "198.19.0.1", "198.18.0.1/16"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	v := o.vxlan
	if v == nil || v.VNI != 42 || len(v.Remotes) != 2 || v.Remotes[1].String() != "198.19.0.3" ||
		v.Local.String() != "198.19.0.1" || v.Port != 4789 || v.Dev != "" || o.mtuSet {
		t.Fatalf("parsed %+v (mtuSet %v)", v, o.mtuSet)
	}
	if o, err = parseArgs([]string{"--vxlan-dev", "vxlan100", "--mtu", "1450", "198.18.0.1/16"}, &bytes.Buffer{}); err != nil ||
		o.vxlan == nil || o.vxlan.Dev != "vxlan100" || o.vxlan.VNI != 0 || !o.mtuSet {
		t.Fatalf("--vxlan-dev: %+v %v", o, err)
	}
	if o, err = parseArgs([]string{"198.18.0.1/16"}, &bytes.Buffer{}); err != nil || o.vxlan != nil {
		t.Fatalf("no --vxlan: %+v %v", o.vxlan, err)
	}
}

func TestParseArgsVXLANErrorsNameTheFix(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--vxlan", "42", "-U"}, []string{"--vxlan 42", "--vxlan-remote", "--vxlan-dev"}},
		{[]string{"--vxlan", "0", "--vxlan-remote", "198.19.0.2", "-U"}, []string{"--vxlan 0", "16777215"}},
		{[]string{"--vxlan", "16777216", "--vxlan-remote", "198.19.0.2", "-U"}, []string{"16777216"}},
		{[]string{"--vxlan-remote", "198.19.0.2", "-U"}, []string{"--vxlan-remote", "--vxlan VNI"}},
		{[]string{"--vxlan", "42", "--vxlan-remote", "peer", "-U"}, []string{`"peer"`, "underlay address"}},
		{[]string{"--vxlan", "42", "--vxlan-remote", "198.19.0.2", "--vxlan-port", "0", "-U"}, []string{"--vxlan-port 0", "4789"}},
		{[]string{"--vxlan-dev", "vx0", "--vxlan-remote", "198.19.0.2", "-U"}, []string{"--vxlan-remote", "--vxlan-dev vx0"}},
	} {
		_, err := parseArgs(tc.args, &bytes.Buffer{})
		if err == nil {
			t.Errorf("%v: accepted", tc.args)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: %q does not say %q", tc.args, err, w)
			}
		}
	}
}
