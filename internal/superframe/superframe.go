// Package superframe builds, for tests, the frames a sender's stack hands
// a device with offloads: a TCP superframe (TSO) or UDP superframe (USO)
// of up to 64 KiB with its virtio_net_hdr, the pseudo-header sum in the
// L4 checksum field (NEEDS_CSUM), as the kernel and a Linux guest do.
// One builder for every package whose tests move superframes (engine,
// vhostuser, vhostguest, vknetplug).
package superframe

import (
	"encoding/binary"

	"github.com/vknetd/vknetd/gso"
)

// Flow is what a superframe is between, and how it is cut.
type Flow struct {
	DstMAC, SrcMAC   [6]byte
	SrcIP, DstIP     [4]byte
	SrcPort, DstPort uint16
	// MSS is gso_size: the payload of each segment. 0 makes a plain
	// frame whose checksum is left to finish (GSO none, NEEDS_CSUM).
	MSS int
	// Fill varies the payload: byte i of the frame is byte(i*7) + Fill.
	Fill byte
}

const (
	ethLen  = 14
	ipv4Len = 20
	tcpLen  = 20
	udpLen  = 8
)

// TCP is an Ethernet/IPv4/TCP frame (DF, ID 0x1234, ACK|PSH, sequence
// number seq) carrying payload bytes, and its header.
func (f Flow) TCP(payload int, seq uint32) ([]byte, gso.VirtioNetHdr) {
	frame := f.ipv4(6, tcpLen+payload)
	tcp := frame[ethLen+ipv4Len:]
	binary.BigEndian.PutUint16(tcp[0:], f.SrcPort)
	binary.BigEndian.PutUint16(tcp[2:], f.DstPort)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], 7) // ack
	tcp[12], tcp[13] = 5<<4, 0x18          // data offset; ACK|PSH
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	binary.BigEndian.PutUint16(tcp[16:], gso.PseudoHeaderSumIPv4(f.SrcIP[:], f.DstIP[:], 6, tcpLen+payload))
	hdr := gso.VirtioNetHdr{Flags: gso.FlagNeedsCsum, HdrLen: ethLen + ipv4Len + tcpLen,
		CsumStart: ethLen + ipv4Len, CsumOffset: 16}
	if f.MSS > 0 {
		hdr.GSOType, hdr.GSOSize = gso.GSOTCPv4, uint16(f.MSS)
	}
	return frame, hdr
}

// UDP is an Ethernet/IPv4/UDP frame carrying payload bytes, cut every MSS
// bytes into datagrams (USO), and its header.
func (f Flow) UDP(payload int) ([]byte, gso.VirtioNetHdr) {
	frame := f.ipv4(17, udpLen+payload)
	udp := frame[ethLen+ipv4Len:]
	binary.BigEndian.PutUint16(udp[0:], f.SrcPort)
	binary.BigEndian.PutUint16(udp[2:], f.DstPort)
	binary.BigEndian.PutUint16(udp[4:], uint16(udpLen+payload))
	binary.BigEndian.PutUint16(udp[6:], gso.PseudoHeaderSumIPv4(f.SrcIP[:], f.DstIP[:], 17, udpLen+payload))
	return frame, gso.VirtioNetHdr{Flags: gso.FlagNeedsCsum, GSOType: gso.GSOUDPL4, GSOSize: uint16(f.MSS),
		HdrLen: ethLen + ipv4Len + udpLen, CsumStart: ethLen + ipv4Len, CsumOffset: 6}
}

// ipv4 is the frame up to its IPv4 header, with l4 bytes after it: the
// payload filled, the L4 header left for the caller.
func (f Flow) ipv4(proto byte, l4 int) []byte {
	frame := make([]byte, ethLen+ipv4Len+l4)
	copy(frame[0:6], f.DstMAC[:])
	copy(frame[6:12], f.SrcMAC[:])
	binary.BigEndian.PutUint16(frame[12:], 0x0800)
	ip := frame[ethLen : ethLen+ipv4Len]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(ipv4Len+l4))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	ip[6] = 0x40 // DF
	ip[8], ip[9] = 64, proto
	copy(ip[12:16], f.SrcIP[:])
	copy(ip[16:20], f.DstIP[:])
	binary.BigEndian.PutUint16(ip[10:], gso.IPv4HeaderChecksum(ip))
	hdrs := ethLen + ipv4Len + udpLen
	if proto == 6 {
		hdrs = ethLen + ipv4Len + tcpLen
	}
	for i := hdrs; i < len(frame); i++ {
		frame[i] = byte(i*7) + f.Fill
	}
	return frame
}
