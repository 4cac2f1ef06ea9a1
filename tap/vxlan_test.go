package tap

import (
	"net/netip"
	"strings"
	"testing"
)

func TestVXLANValidate(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		v    VXLAN
		want string // "" accepts
	}{
		{VXLAN{VNI: 42, Remotes: []netip.Addr{a("198.19.0.2")}}, ""},
		{VXLAN{VNI: 42, Remotes: []netip.Addr{a("2001:db8::2")}, Local: a("2001:db8::1")}, ""},
		{VXLAN{Dev: "vxlan100"}, ""},
		{VXLAN{VNI: 100, Dev: "vxlan100"}, ""},
		{VXLAN{VNI: 42}, "--vxlan-remote"},
		{VXLAN{VNI: 0, Remotes: []netip.Addr{a("198.19.0.2")}}, "--vxlan"},
		{VXLAN{VNI: 1 << 24, Remotes: []netip.Addr{a("198.19.0.2")}}, "16777215"},
		{VXLAN{VNI: 42, Remotes: []netip.Addr{a("198.19.0.2"), a("2001:db8::2")}}, "all be IPv4 or all IPv6"},
		{VXLAN{VNI: 42, Remotes: []netip.Addr{a("198.19.0.2"), a("198.19.0.2")}}, "twice"},
		{VXLAN{VNI: 42, Remotes: []netip.Addr{a("239.1.1.1")}}, "unicast"},
		{VXLAN{VNI: 42, Remotes: []netip.Addr{a("198.19.0.2")}, Local: a("198.19.0.2")}, "only the other hosts"},
		{VXLAN{VNI: 42, Remotes: []netip.Addr{a("198.19.0.2")}, Local: a("2001:db8::1")}, "family"},
		{VXLAN{Dev: "vxlan100", Port: 4789}, "--vxlan-port"},
		{VXLAN{Dev: "vx:1"}, "--vxlan-dev"},
	} {
		err := (&Config{VXLAN: &tc.v}).validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.v, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: %v, want an error saying %q", tc.v, err, tc.want)
		}
	}
}
