package tap

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestValidateRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // every one must appear in the error
	}{
		{"long TAP name", Config{Name: "tap-name-too-long0"}, []string{`"tap-name-too-long0"`, "-t", "15"}},
		{"long bridge name", Config{Bridge: "bridge-name-too-long"}, []string{`"bridge-name-too-long"`, "-b"}},
		{"slash", Config{Name: "tap/0"}, []string{`"tap/0"`, "-t"}},
		{"colon", Config{Bridge: "br:0"}, []string{`"br:0"`, "-b"}},
		{"space", Config{Name: "tap 0"}, []string{`"tap 0"`}},
		{"template", Config{Name: "tap%d"}, []string{`"tap%d"`, "%"}},
		{"dot", Config{Name: "."}, []string{`"."`}},
		{"dotdot", Config{Bridge: ".."}, []string{`".."`}},
		{"bridge is TAP", Config{Name: "tap7", Bridge: "tap7"}, []string{"tap7", "-b", "-t"}},
		{"MTU too small", Config{MTU: 67}, []string{"67", "--mtu", "68"}},
		{"MTU too big", Config{MTU: 65536}, []string{"65536", "--mtu", "65535"}},
		{"negative MTU", Config{MTU: -1}, []string{"-1", "--mtu"}},
		{"prefix 0", Config{Prefix: netip.MustParsePrefix("198.18.0.1/0")}, []string{"198.18.0.1/0", "prefix length 0"}},
		{"4in6", Config{Prefix: netip.MustParsePrefix("::ffff:198.18.0.1/112")}, []string{"198.18.0.1/16"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.validate()
			if err == nil {
				t.Fatalf("validate(%+v) = nil, want an error", tc.cfg)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Name: "tap0", MTU: 1500, Prefix: netip.MustParsePrefix("198.18.0.1/16"), Bridge: "bridge0"},
		{Name: "vkt-tap_0.x", MTU: 68},
		{Name: "abcdefghijklmno", MTU: 65535}, // exactly 15 bytes
		{Prefix: netip.MustParsePrefix("198.18.0.1/32")},
		{Prefix: netip.MustParsePrefix("2001:db8::1/64")},
	} {
		if err := cfg.validate(); err != nil {
			t.Errorf("validate(%+v) = %v, want nil", cfg, err)
		}
	}
}

func TestCloseRunsUndoBackwardsOnce(t *testing.T) {
	var order []int
	d := &Device{fd: 7}
	d.onClose(func() error { order = append(order, 1); return nil })
	d.onClose(func() error { order = append(order, 2); return errors.New("two failed") })
	d.onClose(func() error { order = append(order, 3); return nil })
	err := d.Close()
	if err == nil || !strings.Contains(err.Error(), "two failed") {
		t.Fatalf("Close() = %v, want the failing step's error", err)
	}
	if want := []int{3, 2, 1}; len(order) != 3 || order[0] != 3 || order[1] != 2 || order[2] != 1 {
		t.Fatalf("undo order %v, want %v (every step, even after a failure)", order, want)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close() = %v, want nil", err)
	}
	if len(order) != 3 {
		t.Fatalf("second Close ran undo steps again: %v", order)
	}
	if fd := d.Fd(); fd != -1 {
		t.Fatalf("Fd() after Close = %d, want -1", fd)
	}
}
