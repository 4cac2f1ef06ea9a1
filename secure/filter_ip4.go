package secure

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"

	"github.com/cilium/ebpf/asm"
)

// The kernel filter's ARP and IPv4 rules (see filter.go).

func (f *filterBuilder) arp(p *Policy) {
	f.label("arp", "Ethernet/IPv4 ARP, request or reply, whole",
		asm.JLT.Imm(regLen, etherLen+28, labelDrop),
		asm.LoadAbs(14, asm.Word),
		asm.JNE.Imm32(asm.R0, 0x0001_0800, labelDrop),
		asm.LoadAbs(18, asm.Half),
		asm.JNE.Imm(asm.R0, 0x0604, labelDrop),
		asm.LoadAbs(20, asm.Half),
		asm.Mov.Reg(regB, asm.R0), // the operation, for the probe rule
		asm.JEq.Imm(asm.R0, 1, "arp-sender-mac"),
		asm.JNE.Imm(asm.R0, 2, labelDrop),
	)
	f.label("arp-sender-mac", "the sender MAC is the frame's source",
		asm.LoadAbs(22, asm.Half),
		asm.Mov.Reg(regA, asm.R0),
		asm.LoadAbs(6, asm.Half),
		asm.JNE.Reg(asm.R0, regA, labelDrop),
		asm.LoadAbs(24, asm.Word),
		asm.Mov.Reg(regA, asm.R0),
		asm.LoadAbs(8, asm.Word),
		asm.JNE.Reg(asm.R0, regA, labelDrop),
	)
	f.add("sender IP 0.0.0.0: only a probe (a request)",
		asm.LoadAbs(28, asm.Word),
		asm.JNE.Imm(asm.R0, 0, "arp-sender-ip"),
		asm.JEq.Imm(regB, 1, labelPass),
		asm.Ja.Label(labelDrop),
	)
	f.host4("arp-sender-ip", p)
}

// host4 judges the IPv4 address in R0 as Checker.claimable4 does, short of
// binding it: not the TAP's, a host address of the network.
func (f *filterBuilder) host4(name string, p *Policy) {
	f.label(name, "not the TAP's address "+ip4String(p.tap4),
		asm.JEq.Imm32(asm.R0, int32(p.tap4), labelDrop),
	)
	f.add(fmt.Sprintf("inside the network %s/%d", ip4String(p.net4), bits.OnesCount32(p.mask4)),
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.And.Imm32(asm.R1, int32(p.mask4)),
		asm.JNE.Imm32(asm.R1, int32(p.net4), labelDrop),
	)
	if p.reserveEnds {
		f.add("not its network or broadcast address",
			asm.JEq.Imm32(asm.R0, int32(p.net4), labelDrop),
			asm.JEq.Imm32(asm.R0, int32(p.net4|^p.mask4), labelDrop),
		)
	}
	f.add("", asm.Ja.Label(labelPass))
}

func (f *filterBuilder) ipv4(p *Policy) {
	f.label("ipv4", "version 4, header length, total length within the frame",
		asm.JLT.Imm(regLen, etherLen+20, labelDrop),
		asm.LoadAbs(14, asm.Byte),
		asm.Mov.Reg(regA, asm.R0),
		asm.RSh.Imm(regA, 4),
		asm.JNE.Imm(regA, 4, labelDrop),
		asm.Mov.Reg(regA, asm.R0),
		asm.And.Imm(regA, 0x0f),
		asm.LSh.Imm(regA, 2), // regA: header length in bytes
		asm.JLT.Imm(regA, 20, labelDrop),
		asm.LoadAbs(16, asm.Half),
		asm.JLT.Reg(asm.R0, regA, labelDrop),
		asm.Mov.Reg(regB, asm.R0),
		asm.Add.Imm(regB, etherLen),
		asm.JGT.Reg(regB, regLen, labelDrop),
	)
	// One's complement sum of the five words, folded four times: the sum
	// is below 2^35, so four folds always reach 16 bits, as the Checker's
	// loop does.
	f.add("header checksum, 20-byte headers only (options: the Checker)",
		asm.JNE.Imm(regA, 20, "ipv4-fragment"),
		asm.Mov.Imm(regB, 0),
	)
	for off := int32(14); off < 34; off += 4 {
		f.add("", asm.LoadAbs(off, asm.Word), asm.Add.Reg(regB, asm.R0))
	}
	for i := 0; i < 4; i++ {
		f.add("",
			asm.Mov.Reg(asm.R0, regB),
			asm.RSh.Imm(asm.R0, 16),
			asm.And.Imm(regB, 0xffff),
			asm.Add.Reg(regB, asm.R0),
		)
	}
	f.add("", asm.JNE.Imm(regB, 0xffff, labelDrop))

	f.label("ipv4-fragment", "transport rules: first fragments and whole datagrams",
		asm.LoadAbs(16, asm.Half),
		asm.Sub.Reg(asm.R0, regA),
		asm.Mov.Reg(regB, asm.R0), // regB: transport length
		asm.LoadAbs(20, asm.Half),
		asm.JSet.Imm(asm.R0, 0x1fff, "ipv4-src"),
		asm.LoadAbs(23, asm.Byte),
		asm.JEq.Imm(asm.R0, protoUDP, "ipv4-udp"),
		asm.JEq.Imm(asm.R0, protoICMP, "ipv4-icmp"),
		asm.JEq.Imm(asm.R0, protoTCP, "ipv4-tcp"),
		asm.Ja.Label("ipv4-src"),
	)
	f.label("ipv4-udp", "whole UDP header; no DHCP server or relay (from 67, to 68)",
		asm.JLT.Imm(regB, 8, labelDrop),
		asm.LoadInd(asm.R0, regA, etherLen, asm.Half),
		asm.JEq.Imm(asm.R0, portDHCPServer, labelDrop),
		asm.LoadInd(asm.R0, regA, etherLen+2, asm.Half),
		asm.JEq.Imm(asm.R0, portDHCPClient, labelDrop),
	)
	f.add("unfragmented: the UDP length fits",
		asm.LoadAbs(20, asm.Half),
		asm.JSet.Imm(asm.R0, 0x3fff, "ipv4-src"),
		asm.LoadInd(asm.R0, regA, etherLen+4, asm.Half),
		asm.JLT.Imm(asm.R0, 8, labelDrop),
		asm.JGT.Reg(asm.R0, regB, labelDrop),
	)
	f.add("a DHCP client (68 to 67) may send from 0.0.0.0",
		asm.LoadInd(asm.R0, regA, etherLen, asm.Half),
		asm.JNE.Imm(asm.R0, portDHCPClient, "ipv4-src"),
		asm.LoadInd(asm.R0, regA, etherLen+2, asm.Half),
		asm.JNE.Imm(asm.R0, portDHCPServer, "ipv4-src"),
		asm.LoadAbs(26, asm.Word),
		asm.JEq.Imm(asm.R0, 0, labelPass),
		asm.Ja.Label("ipv4-src-host"),
	)
	f.label("ipv4-icmp", "whole ICMP header; no redirect or router advertisement",
		asm.JLT.Imm(regB, 8, labelDrop),
		asm.LoadInd(asm.R0, regA, etherLen, asm.Byte),
		asm.JEq.Imm(asm.R0, icmpRedirect, labelDrop),
		asm.JEq.Imm(asm.R0, icmpRouterAdvert, labelDrop),
		asm.Ja.Label("ipv4-src"),
	)
	f.label("ipv4-tcp", "whole TCP header",
		asm.JLT.Imm(regB, 20, labelDrop),
		asm.LoadInd(asm.R0, regA, etherLen+12, asm.Byte),
		asm.RSh.Imm(asm.R0, 4),
		asm.LSh.Imm(asm.R0, 2),
		asm.JLT.Imm(asm.R0, 20, labelDrop),
		asm.JGT.Reg(asm.R0, regB, labelDrop),
	)
	f.label("ipv4-src", "source: 0.0.0.0 is a DHCP client's alone",
		asm.LoadAbs(26, asm.Word),
		asm.JEq.Imm(asm.R0, 0, labelDrop),
	)
	f.host4("ipv4-src-host", p)
}

func ip4String(a uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], a)
	return netip.AddrFrom4(b).String()
}
