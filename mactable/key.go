package mactable

// A MAC lives in the low 48 bits of a uint64 key, first octet highest, so
// keys compare and print in the usual byte order and fit one atomic word
// together with a liveness bit.
const (
	macMask = 1<<48 - 1
	// groupBit is the I/G bit: the least significant bit of the first
	// octet, which Key places at bit 40.
	groupBit = 1 << 40
)

// Key packs the 6-byte MAC at b[0:6] into a key. It panics if b is shorter
// than 6 bytes, like any slice index would.
func Key(b []byte) uint64 {
	_ = b[5]
	return uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 |
		uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5])
}

// IsMulticastKey reports whether k is a group address (multicast or
// broadcast). Such addresses are never learned.
func IsMulticastKey(k uint64) bool { return k&groupBit != 0 }

// FormatKey renders k as "aa:bb:cc:dd:ee:ff".
func FormatKey(k uint64) string {
	const hexdigits = "0123456789abcdef"
	var b [17]byte
	for i := 0; i < 6; i++ {
		o := byte(k >> (40 - 8*i))
		if i > 0 {
			b[3*i-1] = ':'
		}
		b[3*i] = hexdigits[o>>4]
		b[3*i+1] = hexdigits[o&0xf]
	}
	return string(b[:])
}
