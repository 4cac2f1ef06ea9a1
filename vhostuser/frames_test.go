package vhostuser

import (
	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/superframe"
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
	return superframe.Flow{DstMAC: [6]byte{2, 0, 0, 0, 0, 2}, SrcMAC: [6]byte{2, 0, 0, 0, 0, 1},
		SrcIP: [4]byte{198, 18, 0, 1}, DstIP: [4]byte{198, 18, 0, 2}, SrcPort: 40000, DstPort: 5001,
		MSS: mss, Fill: seq}.TCP(payload, uint32(seq)<<24)
}
