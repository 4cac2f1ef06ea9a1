package vhostuser

import "encoding/binary"

// flowHash is a hash of the fields that name a frame's flow: its IPv4 or
// IPv6 addresses and, for TCP, UDP and SCTP (not a fragment after the
// first), its ports; for any other frame its MAC addresses. Every frame
// of a flow hashes alike, so a multi-queue guest gets a flow's frames on
// one RX ring, in order, as a NIC's RSS does; and different flows spread
// over the rings. It reads the frame only where the frame has bytes, and
// allocates nothing.
func flowHash(f []byte) uint32 {
	if len(f) < 14 {
		return mix(0, f)
	}
	etype := binary.BigEndian.Uint16(f[12:])
	l3 := 14
	if etype == 0x8100 && len(f) >= 18 { // one VLAN tag
		etype = binary.BigEndian.Uint16(f[16:])
		l3 = 18
	}
	switch {
	case etype == 0x0800 && len(f) >= l3+20:
		ip := f[l3:]
		h := mix(0, ip[12:20]) // source and destination
		ihl := int(ip[0]&0x0f) * 4
		frag := binary.BigEndian.Uint16(ip[6:]) & 0x1fff
		if ports(ip[9]) && frag == 0 && ihl >= 20 && len(ip) >= ihl+4 {
			h = mix(h, ip[ihl:ihl+4])
		}
		return finish(h)
	case etype == 0x86dd && len(f) >= l3+40:
		ip := f[l3:]
		h := mix(0, ip[8:40])
		if ports(ip[6]) && len(ip) >= 44 {
			h = mix(h, ip[40:44])
		}
		return finish(h)
	}
	return finish(mix(0, f[:12]))
}

// ports says IP protocol p carries ports in its first four bytes.
func ports(p byte) bool { return p == 6 || p == 17 || p == 132 }

// mix folds b into h (FNV-1a).
func mix(h uint32, b []byte) uint32 {
	if h == 0 {
		h = 2166136261
	}
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	return h
}

// finish spreads h's bits, so that taking it modulo a small ring count
// uses all of them.
func finish(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	return h
}
