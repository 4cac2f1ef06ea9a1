package gso

import (
	"bytes"
	"encoding/binary"
	"regexp"
	"testing"
)

func TestCheck(t *testing.T) {
	tcp4 := buildFrame(t, frameSpec{tcpOpts: true, payload: randomPayload(1, 14480)}) // l4 at 34, data at 66
	tcp6 := buildFrame(t, frameSpec{v6: true, payload: randomPayload(2, 14400)})      // l4 at 54
	udp4 := buildFrame(t, frameSpec{udp: true, vlans: 1, payload: randomPayload(3, 12000)})
	small := buildFrame(t, frameSpec{payload: randomPayload(4, 100)})
	icmp := bytes.Clone(small)
	icmp[23] = 1
	arp := append([]byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 6}, make([]byte, 46)...)

	tso := func(typ GSOType, size, start, off uint16) VirtioNetHdr {
		return VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: typ, GSOSize: size, CsumStart: start, CsumOffset: off, HdrLen: 66}
	}
	cases := []struct {
		name  string
		frame []byte
		hdr   VirtioNetHdr
		mtu   int
		want  Reason
	}{
		{"tso4 honest", tcp4, tso(GSOTCPv4, 1448, 34, 16), 1500, OK},
		{"tso4 with ecn", tcp4, tso(GSOTCPv4|GSOECN, 1448, 34, 16), 1500, OK},
		{"tso4 data valid", tcp4, VirtioNetHdr{Flags: FlagNeedsCsum | FlagDataValid, GSOType: GSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}, 1500, OK},
		{"tso4 hdr_len lies", tcp4, VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16, HdrLen: 65535}, 1500, OK},
		{"tso4 segment one byte over mtu", tcp4, tso(GSOTCPv4, 1449, 34, 16), 1500, GSOSizeInvalid},
		{"tso4 no mtu given", tcp4, tso(GSOTCPv4, 9000, 34, 16), 0, OK},
		{"tso4 gso_size 0", tcp4, tso(GSOTCPv4, 0, 34, 16), 1500, GSOSizeInvalid},
		{"tso4 without needs_csum", tcp4, VirtioNetHdr{GSOType: GSOTCPv4, GSOSize: 1448}, 1500, CsumMissing},
		{"tso4 csum_start off by one", tcp4, tso(GSOTCPv4, 1448, 35, 16), 1500, CsumOffsetInvalid},
		{"tso4 csum_start at ip", tcp4, tso(GSOTCPv4, 1448, 14, 10), 1500, CsumOffsetInvalid},
		{"tso4 udp csum_offset", tcp4, tso(GSOTCPv4, 1448, 34, 6), 1500, CsumOffsetInvalid},
		{"tso4 on ipv6", tcp6, tso(GSOTCPv4, 1400, 54, 16), 1500, GSOTypeMismatch},
		{"tso6 honest", tcp6, tso(GSOTCPv6, 1440, 54, 16), 1500, OK},
		{"tso6 over mtu", tcp6, tso(GSOTCPv6, 1441, 54, 16), 1500, GSOSizeInvalid},
		{"tso6 on ipv4", tcp4, tso(GSOTCPv6, 1448, 34, 16), 1500, GSOTypeMismatch},
		{"uso honest", udp4, tso(GSOUDPL4, 1472, 38, 6), 1500, OK},
		{"uso tcp csum_offset", udp4, tso(GSOUDPL4, 1472, 38, 16), 1500, CsumOffsetInvalid},
		{"uso on tcp", tcp4, tso(GSOUDPL4, 1448, 34, 16), 1500, GSOTypeMismatch},
		{"tso on udp", udp4, tso(GSOTCPv4, 1448, 38, 6), 1500, GSOTypeMismatch},
		{"ufo", udp4, tso(GSOUDP, 1472, 38, 6), 1500, GSOTypeUnsupported},
		{"ecn on uso", udp4, tso(GSOUDPL4|GSOECN, 1472, 38, 6), 1500, GSOTypeUnknown},
		{"ecn alone", small, VirtioNetHdr{GSOType: GSOECN}, 1500, GSOTypeUnknown},
		{"gso type 2", tcp4, tso(2, 1448, 34, 16), 1500, GSOTypeUnknown},
		{"gso type 0x7f", tcp4, tso(0x7f, 1448, 34, 16), 1500, GSOTypeUnknown},
		{"rsc flag", tcp4, VirtioNetHdr{Flags: FlagNeedsCsum | FlagRSCInfo, GSOType: GSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}, 1500, FlagsInvalid},
		{"flag 0x80", small, VirtioNetHdr{Flags: 0x80}, 1500, FlagsInvalid},
		{"tso on arp", arp, tso(GSOTCPv4, 1448, 34, 16), 1500, GSOTypeMismatch},
		{"tso truncated", tcp4[:1000], tso(GSOTCPv4, 1448, 34, 16), 1500, FrameMalformed},
		{"tso trailing bytes", append(bytes.Clone(tcp4), 0), tso(GSOTCPv4, 1448, 34, 16), 1500, FrameMalformed},
		{"too long", make([]byte, MaxFrameLen+1), VirtioNetHdr{}, 1500, FrameTooLong},
		{"plain frame", small, VirtioNetHdr{}, 1500, OK},
		{"plain arp", arp, VirtioNetHdr{}, 1500, OK},
		{"plain garbage", []byte{1, 2, 3}, VirtioNetHdr{}, 1500, OK},
		{"needs_csum honest", small, VirtioNetHdr{Flags: FlagNeedsCsum, CsumStart: 34, CsumOffset: 16}, 1500, OK},
		{"needs_csum wrong offset", small, VirtioNetHdr{Flags: FlagNeedsCsum, CsumStart: 34, CsumOffset: 2}, 1500, CsumOffsetInvalid},
		{"needs_csum on arp", arp, VirtioNetHdr{Flags: FlagNeedsCsum, CsumStart: 14, CsumOffset: 6}, 1500, CsumOffsetInvalid},
		{"needs_csum on icmp", icmp, VirtioNetHdr{Flags: FlagNeedsCsum, CsumStart: 34, CsumOffset: 2}, 1500, CsumOffsetInvalid},
		{"needs_csum truncated", small[:40], VirtioNetHdr{Flags: FlagNeedsCsum, CsumStart: 34, CsumOffset: 16}, 1500, FrameMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Check(c.frame, c.hdr, c.mtu); got != c.want {
				t.Fatalf("Check = %v, want %v", got, c.want)
			}
		})
	}
}

func TestReasonNames(t *testing.T) {
	kebab := regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)
	seen := map[string]Reason{}
	for r := Reason(0); r < NumReasons; r++ {
		s := r.String()
		if !kebab.MatchString(s) {
			t.Errorf("reason %d: name %q is not kebab-case", r, s)
		}
		if o, dup := seen[s]; dup {
			t.Errorf("reasons %d and %d share the name %q", o, r, s)
		}
		seen[s] = r
	}
	if s := NumReasons.String(); s != "gso-reason-10" {
		t.Errorf("out of range: %q", s)
	}
}

// A plain UDP frame's checksum covers its UDP length, which must therefore
// be sane when the checksum is asked for; a USO superframe's is ignored.
func TestCheckUDPLength(t *testing.T) {
	f := buildFrame(t, frameSpec{udp: true, payload: randomPayload(5, 100)})
	csum := VirtioNetHdr{Flags: FlagNeedsCsum, CsumStart: 34, CsumOffset: 6}
	uso := VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOUDPL4, GSOSize: 50, CsumStart: 34, CsumOffset: 6}
	for ulen, want := range map[uint16]Reason{108: OK, 50: OK, 8: OK, 7: FrameMalformed, 109: FrameMalformed, 0: FrameMalformed} {
		g := bytes.Clone(f)
		binary.BigEndian.PutUint16(g[38:], ulen)
		if r := Check(g, csum, 1500); r != want {
			t.Errorf("UDP length %d: %v, want %v", ulen, r, want)
		}
		if r := Check(g, uso, 1500); r != OK {
			t.Errorf("USO, UDP length %d: %v", ulen, r)
		}
		if err := CompleteChecksum(g, csum); (err == nil) != (want == OK) {
			t.Errorf("UDP length %d: CompleteChecksum says %v", ulen, err)
		}
		if want == OK {
			if d, _, ok := decode(g); !ok || len(d.payload) != int(ulen)-8 {
				t.Errorf("UDP length %d: gopacket decodes %d bytes of payload", ulen, len(d.payload))
			} else {
				verifyL4Checksum(t, d)
			}
		}
	}
}
