package secure

import (
	"encoding/binary"
	"net"

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
//   - runts and oversize frames are left to the engine (see entry);
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

// Labels shared by every section of the program.
const (
	labelPass = "pass"
	labelDrop = "drop"
)

// FilterInstructions returns the kernel filter for p: a socket filter that
// returns 0 (drop) or the frame's length (keep). A dropped frame first
// adds one to its socket's 64-bit counter, keyed by socket cookie, in the
// per-CPU hash the loader associates with DropsMapName. The program is a
// pure function of the policy, so tests can pin its text. p must be
// secure.
func (p *Policy) FilterInstructions() asm.Instructions {
	var f filterBuilder
	f.entry()
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

// entry passes runts and oversize frames untouched: the engine drops them
// too, but counts them as runt and oversize, which tell an operator of a
// broken client or an MTU mismatch where kernel-filter would not. A
// flood of them costs the daemon no more than one of frames the filter
// passes anyway. The filter then needs no MTU, so it cannot disagree with
// the engine's; and a datagram listener gets vfkit's 4-byte hello, which
// registers the client.
func (f *filterBuilder) entry() {
	f.add("runts: the engine's (it counts them as runt)",
		asm.Mov.Reg(regCtx, asm.R1),
		asm.LoadMem(regLen, regCtx, 0, asm.Word), // __sk_buff.len
		asm.JLT.Imm(regLen, etherLen, labelPass),
	)
}

func (f *filterBuilder) sourceMAC(tap [6]byte) {
	f.add("source MAC: multicast (and broadcast)",
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
