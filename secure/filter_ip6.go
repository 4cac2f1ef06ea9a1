package secure

import (
	"encoding/binary"
	"net/netip"

	"github.com/cilium/ebpf/asm"
)

// The kernel filter's IPv6 rules (see filter.go): only what the fixed
// header and the header right after it decide.

func (f *filterBuilder) ipv6(p *Policy) {
	f.label("ipv6", "version 6, payload length nonzero and within the frame",
		asm.JLT.Imm(regLen, etherLen+40, labelDrop),
		asm.LoadAbs(14, asm.Byte),
		asm.RSh.Imm(asm.R0, 4),
		asm.JNE.Imm(asm.R0, 6, labelDrop),
		asm.LoadAbs(18, asm.Half),
		asm.JEq.Imm(asm.R0, 0, labelDrop),
		asm.Add.Imm(asm.R0, etherLen+40),
		asm.JGT.Reg(asm.R0, regLen, labelDrop),
		asm.LoadAbs(20, asm.Byte),
		asm.Mov.Reg(regA, asm.R0), // regA: the next header
	)
	const src = etherLen + 8
	f.add("source ::",
		asm.LoadAbs(src, asm.Word),
		asm.JNE.Imm(asm.R0, 0, "ipv6-src"),
		asm.LoadAbs(src+4, asm.Word),
		asm.JNE.Imm(asm.R0, 0, "ipv6-src"),
		asm.LoadAbs(src+8, asm.Word),
		asm.JNE.Imm(asm.R0, 0, "ipv6-src"),
		asm.LoadAbs(src+12, asm.Word),
		asm.JNE.Imm(asm.R0, 0, "ipv6-src"),
	)
	f.add("from :: only router and neighbour solicitations and MLD reports; behind extension headers: the Checker",
		asm.JEq.Imm(regA, ext6HopByHop, labelPass),
		asm.JEq.Imm(regA, ext6Routing, labelPass),
		asm.JEq.Imm(regA, ext6Fragment, labelPass),
		asm.JEq.Imm(regA, ext6DestOpts, labelPass),
		asm.JNE.Imm(regA, protoICMPv6, labelDrop),
		asm.LoadAbs(etherLen+40, asm.Byte),
		asm.JEq.Imm(asm.R0, 133, "ipv6-host-only"), // router solicitation
		asm.JEq.Imm(asm.R0, 135, "ipv6-host-only"), // neighbour solicitation
		asm.JEq.Imm(asm.R0, 131, "ipv6-host-only"), // MLDv1 report
		asm.JEq.Imm(asm.R0, 143, "ipv6-host-only"), // MLDv2 report
		asm.Ja.Label(labelDrop),
	)
	f.notEqual6("ipv6-src", "not the TAP's address "+netip.AddrFrom16(p.tap6).String(), p.tap6, "ipv6-src-not-tap")
	f.notEqual6("ipv6-src-not-tap", "nor its link-local one "+netip.AddrFrom16(p.tap6LL).String(), p.tap6LL, "ipv6-src-allowed")
	f.label("ipv6-src-allowed", "link-local (fe80::/10) or inside the prefix",
		asm.LoadAbs(src, asm.Word),
		asm.And.Imm32(asm.R0, -0x0040_0000),                   // 0xffc00000
		asm.JEq.Imm32(asm.R0, -0x0180_0000, "ipv6-host-only"), // 0xfe800000
	)
	var mask, net [16]byte
	binary.BigEndian.PutUint64(mask[:8], p.mask6[0])
	binary.BigEndian.PutUint64(mask[8:], p.mask6[1])
	binary.BigEndian.PutUint64(net[:8], p.net6[0])
	binary.BigEndian.PutUint64(net[8:], p.net6[1])
	f.inside6(mask, net)

	f.label("ipv6-host-only", "right after the fixed header: no router advertisement, redirect or DHCPv6 server",
		asm.JEq.Imm(regA, protoICMPv6, "ipv6-icmp"),
		asm.JNE.Imm(regA, protoUDP, labelPass),
		asm.LoadAbs(18, asm.Half),
		asm.JLT.Imm(asm.R0, 8, labelDrop),
		asm.LoadAbs(etherLen+40, asm.Half),
		asm.JEq.Imm(asm.R0, portDHCPv6Server, labelDrop),
		asm.LoadAbs(etherLen+42, asm.Half),
		asm.JEq.Imm(asm.R0, portDHCPv6Client, labelDrop),
		asm.Ja.Label(labelPass),
	)
	f.label("ipv6-icmp", "",
		asm.LoadAbs(etherLen+40, asm.Byte),
		asm.JEq.Imm(asm.R0, icmp6RouterAdvert, labelDrop),
		asm.JEq.Imm(asm.R0, icmp6Redirect, labelDrop),
		asm.Ja.Label(labelPass),
	)
}

// notEqual6 drops a frame whose source address is a and goes on at next
// (the caller's next label) with any other.
func (f *filterBuilder) notEqual6(name, comment string, a [16]byte, next string) {
	const src = etherLen + 8
	for i := 0; i < 4; i++ {
		ins := asm.LoadAbs(int32(src+4*i), asm.Word)
		if i == 0 {
			f.label(name, comment, ins)
		} else {
			f.add("", ins)
		}
		f.add("", asm.JNE.Imm32(asm.R0, int32(binary.BigEndian.Uint32(a[4*i:])), next))
	}
	f.add("", asm.Ja.Label(labelDrop))
}

// inside6 drops the source address unless it is inside net/mask; words
// the mask does not cover are not loaded.
func (f *filterBuilder) inside6(mask, net [16]byte) {
	const src = etherLen + 8
	for i := 0; i < 4; i++ {
		m := binary.BigEndian.Uint32(mask[4*i:])
		if m == 0 {
			continue
		}
		f.add("", asm.LoadAbs(int32(src+4*i), asm.Word))
		if m != ^uint32(0) {
			f.add("", asm.And.Imm32(asm.R0, int32(m)))
		}
		f.add("", asm.JNE.Imm32(asm.R0, int32(binary.BigEndian.Uint32(net[4*i:])), labelDrop))
	}
	f.add("", asm.Ja.Label("ipv6-host-only"))
}
