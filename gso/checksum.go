package gso

import (
	"encoding/binary"
	"math/bits"
)

// The Internet checksum (RFC 1071) is the one's complement of the one's
// complement sum of 16-bit big-endian words. Sums are carried in a uint64
// and folded once at the end: adding 64-bit words with end-around carry is
// the same sum modulo 2^16-1, four times fewer additions.

// sum adds b to acc, as if b were appended to the bytes acc already sums.
// b must start on an even offset of that sequence (an odd-length b only as
// the last piece).
func sum(b []byte, acc uint64) uint64 {
	var c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[0:8]), 0)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[8:16]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[16:24]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[24:32]), c)
		// End-around carry; the second add cannot carry again.
		acc, c = bits.Add64(acc, c, 0)
		acc += c
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[:8]), 0)
		acc += c
		b = b[8:]
	}
	// The tail is under 8 bytes: a 4-, 2- and 1-byte piece, each a word
	// padded on the right as RFC 1071 pads an odd byte.
	if len(b) >= 4 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint32(b[:4])), 0)
		acc += c
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b[:2])), 0)
		acc += c
		b = b[2:]
	}
	if len(b) == 1 {
		acc, c = bits.Add64(acc, uint64(b[0])<<8, 0)
		acc += c
	}
	return acc
}

// fold reduces a sum to 16 bits, still uncomplemented.
func fold(acc uint64) uint16 {
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 16) + (acc & 0xffff)
	acc = (acc >> 16) + (acc & 0xffff)
	return uint16(acc)
}

// Checksum returns the Internet checksum of b, seeded with initial (a
// pseudo-header sum, or 0): the value to store in a checksum field that was
// zero while b was summed.
func Checksum(b []byte, initial uint16) uint16 {
	return ^fold(sum(b, uint64(initial)))
}

// IPv4HeaderChecksum returns the checksum of the IPv4 header h (all of it,
// options included), computed as if its checksum field (bytes 10-11) were
// zero, whatever it holds.
func IPv4HeaderChecksum(h []byte) uint16 {
	if len(h) < 12 {
		return ^fold(sum(h, 0))
	}
	acc := sum(h[:10], 0)
	acc = sum(h[12:], acc)
	return ^fold(acc)
}

// PseudoHeaderSumIPv4 returns the folded, uncomplemented sum of the IPv4
// pseudo-header (RFC 793, RFC 768) for an L4 segment of length bytes. It is
// what a CHECKSUM_PARTIAL (NEEDS_CSUM) frame carries in its TCP or UDP
// checksum field. src and dst are 4 bytes each.
func PseudoHeaderSumIPv4(src, dst []byte, proto uint8, length int) uint16 {
	return fold(pseudoIPv4(src, dst, proto, length))
}

// PseudoHeaderSumIPv6 is PseudoHeaderSumIPv4 for IPv6 (RFC 8200 8.1): src
// and dst are 16 bytes each, length is the upper-layer packet length.
func PseudoHeaderSumIPv6(src, dst []byte, proto uint8, length int) uint16 {
	return fold(pseudoIPv6(src, dst, proto, length))
}

func pseudoIPv4(src, dst []byte, proto uint8, length int) uint64 {
	acc := uint64(binary.BigEndian.Uint32(src[:4])) + uint64(binary.BigEndian.Uint32(dst[:4]))
	return acc + uint64(proto) + uint64(uint32(length))
}

func pseudoIPv6(src, dst []byte, proto uint8, length int) uint64 {
	acc := sum(src[:16], 0)
	acc = sum(dst[:16], acc)
	acc, c := bits.Add64(acc, uint64(uint32(length))+uint64(proto), 0)
	return acc + c
}
