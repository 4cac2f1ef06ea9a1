package vhostuser

import "encoding/binary"

// rarpLen is an announcement's length: the Ethernet minimum, without the
// frame check sequence (a RARP message takes 14 + 28 bytes of it).
const rarpLen = 60

// putRARP writes into b (at least rarpLen bytes) the frame that announces
// mac after a migration, as hypervisors send it for a guest: a broadcast
// RARP request (RFC 903, "request reverse") from mac about mac, with no
// protocol addresses. Switches on its way learn mac's new port from its
// source; nothing answers it. It returns the frame's length.
func putRARP(b []byte, mac [6]byte) int {
	b = b[:rarpLen]
	clear(b)
	copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(b[6:12], mac[:])
	binary.BigEndian.PutUint16(b[12:], 0x8035) // RARP
	a := b[14:]
	binary.BigEndian.PutUint16(a[0:], 1)      // hardware: Ethernet
	binary.BigEndian.PutUint16(a[2:], 0x0800) // protocol: IPv4
	a[4], a[5] = 6, 4                         // address lengths
	binary.BigEndian.PutUint16(a[6:], 3)      // request reverse
	copy(a[8:14], mac[:])                     // sender hardware address
	copy(a[18:24], mac[:])                    // target hardware address
	return rarpLen
}
