package vhostuser

import (
	"encoding/binary"

	"github.com/vknetd/vknetd/gso"
)

// Frames and buffers for tests, on every platform.

func frame(size, seq int) []byte {
	f := make([]byte, size)
	for i := range f {
		f[i] = byte(i*7 + seq)
	}
	return f
}

func frames(n, size int) [][]byte {
	fs := make([][]byte, n)
	for i := range fs {
		fs[i] = frame(size, i)
	}
	return fs
}

func bufs(n, size int) ([][]byte, []int) {
	b := make([][]byte, n)
	for i := range b {
		b[i] = make([]byte, size)
	}
	return b, make([]int, n)
}

// maxTCPPayload fills an IPv4 packet to its 64 KiB limit.
const maxTCPPayload = 65535 - 20 - 20

// tcpSuperframe builds an Ethernet/IPv4/TCP frame carrying payload bytes
// (seq varies them) and the header a sender with TSO4 gives it: a partial
// checksum (the pseudo-header sum in place) and segments of mss bytes.
func tcpSuperframe(payload, mss int, seq byte) ([]byte, gso.VirtioNetHdr) {
	const l2, l3, l4 = 14, 20, 20
	f := make([]byte, l2+l3+l4+payload)
	copy(f, []byte{0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00})
	ip := f[l2 : l2+l3]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(l3+l4+payload))
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
	ip[8], ip[9] = 64, 6
	copy(ip[12:], []byte{198, 18, 0, 1, 198, 18, 0, 2})
	binary.BigEndian.PutUint16(ip[10:], ^onesSum(ip, 0))
	tcp := f[l2+l3 : l2+l3+l4]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5001)
	binary.BigEndian.PutUint32(tcp[4:], uint32(seq)<<24)
	tcp[12], tcp[13] = 5<<4, 0x18 // ACK|PSH
	binary.BigEndian.PutUint16(tcp[14:], 0xffff)
	for i := range f[l2+l3+l4:] {
		f[l2+l3+l4+i] = byte(i*13 + int(seq))
	}
	pseudo := onesSum(ip[12:20], uint32(6+l4+payload))
	binary.BigEndian.PutUint16(tcp[16:], pseudo)
	return f, gso.VirtioNetHdr{Flags: gso.FlagNeedsCsum, GSOType: gso.GSOTCPv4, HdrLen: l2 + l3 + l4,
		GSOSize: uint16(mss), CsumStart: l2 + l3, CsumOffset: 16}
}

// onesSum is the folded one's complement sum of b (even length) and sum.
func onesSum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}
