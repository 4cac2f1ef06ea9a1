package secure

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net"
	"net/netip"

	"github.com/cilium/ebpf/asm"
)

// The kernel half of secure mode: the rules a frame can be judged by alone,
// with no binding table and no knowledge of where it goes, as an eBPF socket
// filter. Attached to the switch's end of a client socket it runs in the
// client's own sendmsg (af_unix calls the receiver's sk_filter), so a
// spoofing client pays for its frames and the switch never wakes for them.
//
// The filter may drop less than the Checker, never more: every jump to
// "drop" below is taken only for a frame on which Checker.Check returns a
// drop whatever the binding table holds. What it cannot decide in a few
// loads it passes, and the Checker decides. In particular:
//   - IPv4 options are not walked and the header checksum is checked only
//     for a 20-byte header (the common case, unrolled);
//   - a DHCP client's frame from 0.0.0.0 passes: its body is the Checker's;
//   - IPv6 extension headers are not walked: the rules that need the
//     transport header (router advertisements, redirects, DHCPv6 servers,
//     the unspecified source) apply only when it follows the fixed header;
//   - neighbour-discovery options are left to the Checker;
//   - the TAP's protocol allowlist (ToTap) is not applied at all: the
//     filter does not know where a frame goes, and between clients every
//     protocol passes.
//
// A socket filter sees the message from its first byte: the Ethernet
// header is at offset 0. LD_ABS and LD_IND give network byte order values
// as numbers; an out-of-range one would end the program with 0 (drop), so
// every load is preceded by a length check that passes or drops by the
// Checker's rules first.

// Registers the program keeps across loads (LD_ABS/LD_IND clobber R0-R5).
const (
	regCtx   = asm.R6 // the __sk_buff, as LD_ABS requires
	regLen   = asm.R7 // the frame's length
	regA     = asm.R8
	regB     = asm.R9
	etherLen = 14
)

// DropsMapName is the reference of the drop counter's map in the program.
const DropsMapName = "kernel_drops"

// VfkitHello is the 4-byte datagram vfkit sends before its first frame
// (the engine's dgram listener registers the client on it): not a frame,
// but the filter must let it through.
var VfkitHello = [4]byte{'V', 'F', 'K', 'T'}

// Labels shared by every section of the program.
const (
	labelPass = "pass"
	labelDrop = "drop"
)

// FilterInstructions returns the kernel filter for p: a socket filter that
// returns 0 (drop) or the frame's length (keep). mtu is the engine's MTU:
// an untagged frame longer than mtu+14 is oversize, and secure mode drops
// every tagged one. A dropped frame first adds one to its socket's 64-bit
// counter, keyed by socket cookie, in the per-CPU hash the loader
// associates with DropsMapName.
// The program is a pure function of its arguments, so tests can pin its
// text. p must be secure.
func (p *Policy) FilterInstructions(mtu int) asm.Instructions {
	var f filterBuilder
	f.entry(mtu)
	f.sourceMAC(p.tapMAC)
	f.etherType(p.ipv6)
	f.arp(p)
	f.ipv4(p)
	if p.ipv6 {
		f.ipv6(p)
	}
	f.verdicts()
	return f.insns
}

type filterBuilder struct {
	insns asm.Instructions
}

// add appends instructions; a comment, if given, is attached to the first.
func (f *filterBuilder) add(comment string, ins ...asm.Instruction) {
	if comment != "" {
		ins[0] = ins[0].WithSource(asm.Comment(comment))
	}
	f.insns = append(f.insns, ins...)
}

// label names the next instruction added.
func (f *filterBuilder) label(name string, comment string, ins ...asm.Instruction) {
	ins[0] = ins[0].WithSymbol(name)
	f.add(comment, ins...)
}

func (f *filterBuilder) entry(mtu int) {
	f.add("oversize frames: the engine drops them before any rule",
		asm.Mov.Reg(regCtx, asm.R1),
		asm.LoadMem(regLen, regCtx, 0, asm.Word), // __sk_buff.len
		asm.JGT.Imm(regLen, int32(mtu+etherLen), labelDrop),
		asm.JGE.Imm(regLen, etherLen, "src-mac"),
	)
	f.add("runts, but for vfkit's hello on a datagram listener: it registers the client",
		asm.JNE.Imm(regLen, int32(len(VfkitHello)), labelDrop),
		asm.LoadAbs(0, asm.Word),
		asm.JEq.Imm32(asm.R0, int32(binary.BigEndian.Uint32(VfkitHello[:])), labelPass),
		asm.Ja.Label(labelDrop),
	)
}

func (f *filterBuilder) sourceMAC(tap [6]byte) {
	f.label("src-mac", "source MAC: multicast (and broadcast)",
		asm.LoadAbs(6, asm.Byte),
		asm.JSet.Imm(asm.R0, 1, labelDrop),
	)
	f.add("source MAC: zero",
		asm.LoadAbs(6, asm.Half),
		asm.Mov.Reg(regA, asm.R0),
		asm.LoadAbs(8, asm.Word),
		asm.Mov.Reg(regB, asm.R0),
		asm.JNE.Imm(regA, 0, "src-mac-tap"),
		asm.JEq.Imm(regB, 0, labelDrop),
	)
	f.label("src-mac-tap", "source MAC: the TAP's, "+net.HardwareAddr(tap[:]).String(),
		asm.JNE.Imm(regA, int32(binary.BigEndian.Uint16(tap[0:2])), "ethertype"),
		asm.JEq.Imm32(regB, int32(binary.BigEndian.Uint32(tap[2:6])), labelDrop),
	)
}

func (f *filterBuilder) etherType(ipv6 bool) {
	v6 := labelDrop // without --ipv6 every IPv6 frame is dropped
	if ipv6 {
		v6 = "ipv6"
	}
	f.label("ethertype", "",
		asm.LoadAbs(12, asm.Half),
		asm.JEq.Imm(asm.R0, etherTypeARP, "arp"),
		asm.JEq.Imm(asm.R0, etherTypeIPv4, "ipv4"),
		asm.JEq.Imm(asm.R0, etherTypeIPv6, v6),
	)
	f.add("VLAN tags, single or stacked",
		asm.JEq.Imm(asm.R0, etherTypeDot1Q, labelDrop),
		asm.JEq.Imm(asm.R0, etherTypeQinQ, labelDrop),
		asm.JEq.Imm(asm.R0, etherTypeQinQ9100, labelDrop),
		asm.JEq.Imm(asm.R0, etherTypeQinQ9200, labelDrop),
	)
	f.add("other ethertypes pass between clients; ToTap keeps them off the TAP",
		asm.Ja.Label(labelPass),
	)
}

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

// host4 judges the IPv4 address in R0 as Policy.claim4 does, short of
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

func (f *filterBuilder) verdicts() {
	f.label(labelPass, "keep the whole frame",
		asm.Mov.Reg(asm.R0, regLen),
		asm.Return(),
	)
	// The filter runs for the receiving socket, and bpf_get_socket_cookie
	// names it (TestKernelFilterCountsPerSocket holds the kernel to it):
	// the engine reads each port's count by its socket's SO_COOKIE.
	f.label(labelDrop, "count the drop under the socket's cookie, in this CPU's slot",
		asm.Mov.Reg(asm.R1, regCtx),
		asm.FnGetSocketCookie.Call(),
		asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.LoadMapPtr(asm.R1, 0).WithReference(DropsMapName),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop-first"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Ja.Label("drop-return"),
	)
	f.label("drop-first", "the socket's first drop on this CPU: insert it (BPF_ANY: another CPU may have)",
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreMem(asm.RFP, -16, asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, 0).WithReference(DropsMapName),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -16),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnMapUpdateElem.Call(),
	)
	f.label("drop-return", "", asm.Mov.Imm(asm.R0, 0), asm.Return())
}

func ip4String(a uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], a)
	return netip.AddrFrom4(b).String()
}
