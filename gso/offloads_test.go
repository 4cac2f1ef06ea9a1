package gso

import "testing"

func TestOffloadsTakes(t *testing.T) {
	all := OffloadCsum | OffloadTSO4 | OffloadTSO6 | OffloadECN | OffloadUSO
	for _, c := range []struct {
		name string
		o    Offloads
		h    VirtioNetHdr
		want bool
	}{
		{"plain frame, no offloads", 0, VirtioNetHdr{}, true},
		{"data-valid needs nothing", 0, VirtioNetHdr{Flags: FlagDataValid}, true},
		{"needs-csum without csum", OffloadTSO4 | OffloadTSO6, VirtioNetHdr{Flags: FlagNeedsCsum}, false},
		{"needs-csum with csum", OffloadCsum, VirtioNetHdr{Flags: FlagNeedsCsum}, true},
		{"tso4 with csum+tso4", OffloadCsum | OffloadTSO4, VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv4}, true},
		{"tso4 without csum", OffloadTSO4, VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv4}, false},
		{"tso4 to a tso6 port", OffloadCsum | OffloadTSO6, VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv4}, false},
		{"tso6 with csum+tso6", OffloadCsum | OffloadTSO6, VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv6}, true},
		{"ecn without ecn", OffloadCsum | OffloadTSO4, VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv4 | GSOECN}, false},
		{"ecn with ecn", all, VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv4 | GSOECN}, true},
		{"uso without uso", OffloadCsum | OffloadTSO4 | OffloadTSO6, VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOUDPL4}, false},
		{"uso with uso", all, VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOUDPL4}, true},
		{"ufo never", all, VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOUDP}, false},
		{"unknown type never", all, VirtioNetHdr{GSOType: 9}, false},
	} {
		if got := c.o.Takes(c.h); got != c.want {
			t.Errorf("%s: Offloads(%#x).Takes(%+v) = %v, want %v", c.name, c.o, c.h, got, c.want)
		}
	}
}

func TestOffloadsString(t *testing.T) {
	for o, want := range map[Offloads]string{0: "-", OffloadCsum: "csum",
		OffloadCsum | OffloadTSO4 | OffloadTSO6:                           "csum,tso4,tso6",
		OffloadCsum | OffloadTSO4 | OffloadTSO6 | OffloadECN | OffloadUSO: "csum,tso4,tso6,ecn,uso"} {
		if got := o.String(); got != want {
			t.Errorf("Offloads(%#x) = %q, want %q", uint8(o), got, want)
		}
	}
}

func TestOffloaded(t *testing.T) {
	if (VirtioNetHdr{Flags: FlagDataValid}).Offloaded() {
		t.Error("a data-valid plain frame is not a superframe")
	}
	if !(VirtioNetHdr{Flags: FlagNeedsCsum}).Offloaded() || !(VirtioNetHdr{GSOType: GSOTCPv6}).Offloaded() {
		t.Error("needs-csum and GSO frames carry work for the receiver")
	}
}
