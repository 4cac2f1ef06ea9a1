package main

import "encoding/binary"

// udpFrame builds an Ethernet/IPv4/UDP frame of size bytes with a valid
// IPv4 header, so that it also passes vknetd's secure mode.
func udpFrame(dst, src [6]byte, srcIP, dstIP [4]byte, size int) []byte {
	size = max(size, 60)
	f := make([]byte, size)
	copy(f[0:], dst[:])
	copy(f[6:], src[:])
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(size-14))
	ip[6] = 0x40 // don't fragment
	ip[8] = 64
	ip[9] = 17
	copy(ip[12:], srcIP[:])
	copy(ip[16:], dstIP[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := f[34:42]
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 9) // discard
	binary.BigEndian.PutUint16(udp[4:], uint16(size-34))
	return f
}
