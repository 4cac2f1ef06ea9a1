package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestVhostMemoryFlags(t *testing.T) {
	space := addressSpace()
	o, err := parseArgs([]string{"198.18.0.1/16"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.vhostMemoryTotal != space/2 || o.vhostMemoryMax != min(1<<40, space/2) || o.userVhostMemory != max(space/8, o.vhostMemoryMax) {
		t.Fatalf("defaults: max %s, user %s, total %s (address space %s)",
			sizeFlag(o.vhostMemoryMax), sizeFlag(o.userVhostMemory), sizeFlag(o.vhostMemoryTotal), sizeFlag(space))
	}
	if space == 128<<40 && (o.vhostMemoryTotal != 64<<40 || o.userVhostMemory != 16<<40) {
		t.Fatalf("x86-64 defaults: user %s, total %s; want 16T, 64T", sizeFlag(o.userVhostMemory), sizeFlag(o.vhostMemoryTotal))
	}
	o, err = parseArgs([]string{"--vhost-memory-max", "64G", "--user-vhost-memory", "1TiB", "--vhost-memory-total", "2199023255552", "198.18.0.1/16"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.vhostMemoryMax != 64<<30 || o.userVhostMemory != 1<<40 || o.vhostMemoryTotal != 2<<40 {
		t.Fatalf("given: %d %d %d", o.vhostMemoryMax, o.userVhostMemory, o.vhostMemoryTotal)
	}
	// A smaller total lowers the defaults below it with it.
	o, err = parseArgs([]string{"--vhost-memory-total", "512G", "198.18.0.1/16"}, &bytes.Buffer{})
	if err != nil || o.vhostMemoryMax != 512<<30 || o.userVhostMemory != 512<<30 {
		t.Fatalf("--vhost-memory-total 512G: max %d user %d, %v", o.vhostMemoryMax, o.userVhostMemory, err)
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--vhost-memory-max", "lots"}, []string{"vhost-memory-max", "64G"}},
		{[]string{"--vhost-memory-max", "1X"}, []string{"vhost-memory-max", "1T"}},
		{[]string{"--vhost-memory-max", "99999999999P"}, []string{"64 bits"}},
		{[]string{"--vhost-memory-max", "4096"}, []string{"--vhost-memory-max 4K", "1M", "RAM"}},
		{[]string{"--vhost-memory-max", "2T", "--user-vhost-memory", "1T"}, []string{"--user-vhost-memory 1T", "--vhost-memory-max (2T)"}},
		{[]string{"--vhost-memory-total", "1P"}, []string{"--vhost-memory-total 1P", "address space"}},
		{[]string{"--vhost-memory-total", "512G", "--vhost-memory-max", "1T"}, []string{"--vhost-memory-max 1T", "--vhost-memory-total (512G)"}},
	} {
		_, err := parseArgs(append(c.args, "198.18.0.1/16"), &bytes.Buffer{})
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%v: err = %v, want it to contain %q", c.args, err, w)
			}
		}
	}
}

func TestSizeFlagRoundTrip(t *testing.T) {
	for s, n := range map[string]uint64{"0": 0, "1": 1, "1536": 1536, "1K": 1 << 10, "3M": 3 << 20, "64G": 64 << 30, "1T": 1 << 40, "2P": 2 << 50} {
		got, err := parseSize(s)
		if err != nil || got != n {
			t.Errorf("parseSize(%q) = %d, %v; want %d", s, got, err, n)
		}
		if sizeFlag(n) != s {
			t.Errorf("sizeFlag(%d) = %q, want %q", n, sizeFlag(n), s)
		}
	}
	for _, s := range []string{"64g", "64GB", "64GiB", "64gib"} {
		if n, err := parseSize(s); err != nil || n != 64<<30 {
			t.Errorf("parseSize(%q) = %d, %v", s, n, err)
		}
	}
	for _, s := range []string{"", "G", "-1G", "1.5G", "1 G", "1GG", "0x10"} {
		if _, err := parseSize(s); err == nil {
			t.Errorf("parseSize(%q) accepted", s)
		}
	}
}
