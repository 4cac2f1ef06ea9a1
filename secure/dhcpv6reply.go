package secure

import (
	"encoding/binary"
	"math"
	"time"
)

// DHCPv6 message types and options (RFC 8415 7.3, 21) the lease snooping
// reads.
const (
	dhcp6Reply     = 7
	dhcp6Release   = 8
	dhcp6Decline   = 9
	dhcp6OptIANA   = 3
	dhcp6OptIAAddr = 5
)

// MaxDHCPv6Addrs is how many addresses of one DHCPv6 Reply are read; the
// rest lease nothing. A client asks for one address per IA_NA, and for one
// or two IA_NAs.
const MaxDHCPv6Addrs = 4

// maxReleased is how many addresses of one release the switch frees: a
// DHCPv4 release gives back one, a DHCPv6 one its IA_NAs' addresses.
const maxReleased = MaxDHCPv6Addrs

// DHCPv6Lease is one address (IAADDR) of an IA_NA in a DHCPv6 Reply.
type DHCPv6Lease struct {
	Addr [16]byte
	// ValidSecs is the valid lifetime: 0 withdraws the address,
	// 0xffffffff never ends.
	ValidSecs uint32
}

// DHCPv6Reply is what a DHCPv6 Reply from the host's server says about
// leases. DHCPv6 has no client hardware address: the client is the
// Ethernet destination, since servers answer a client's link-local address.
type DHCPv6Reply struct {
	ClientMAC [6]byte
	Leases    [MaxDHCPv6Addrs]DHCPv6Lease
	NLeases   int
}

// ParseDHCPv6Reply reads a DHCPv6 Reply out of an Ethernet frame the TAP
// sends: untagged IPv6 to a unicast MAC, UDP right after the IPv6 header
// (no extension headers) from port 547 to port 546, message type Reply, and
// well-formed options. It returns the IAADDR options of its IA_NA options,
// the first MaxDHCPv6Addrs of them. Anything else is not a reply (ok
// false). Like ParseDHCPReply it reads in place and allocates nothing.
func ParseDHCPv6Reply(frame []byte) (m DHCPv6Reply, ok bool) {
	if len(frame) < 14+40+8+4 || binary.BigEndian.Uint16(frame[12:14]) != etherTypeIPv6 || frame[0]&1 != 0 {
		return m, false
	}
	h := frame[14:]
	if h[0]>>4 != 6 || h[6] != protoUDP {
		return m, false
	}
	l4 := h[40:]
	if binary.BigEndian.Uint16(l4[0:2]) != portDHCPv6Server || binary.BigEndian.Uint16(l4[2:4]) != portDHCPv6Client {
		return m, false
	}
	plen := int(binary.BigEndian.Uint16(h[4:6]))
	if plen < 8 || 40+plen > len(h) {
		return m, false
	}
	l4 = h[40 : 40+plen]
	ulen := int(binary.BigEndian.Uint16(l4[4:6]))
	if ulen < 8+4 || ulen > len(l4) {
		return m, false
	}
	b := l4[8:ulen]
	if b[0] != dhcp6Reply {
		return m, false
	}
	m.ClientMAC = [6]byte(frame[0:6])
	for o := b[4:]; len(o) > 0; {
		code, v, rest, good := dhcp6Option(o)
		if !good {
			return m, false
		}
		o = rest
		if code != dhcp6OptIANA {
			continue
		}
		if len(v) < 12 { // IAID, T1, T2
			return m, false
		}
		for sub := v[12:]; len(sub) > 0; {
			code, a, rest, good := dhcp6Option(sub)
			if !good {
				return m, false
			}
			sub = rest
			if code != dhcp6OptIAAddr {
				continue
			}
			if len(a) < 24 { // address, preferred and valid lifetimes
				return m, false
			}
			if m.NLeases < MaxDHCPv6Addrs {
				m.Leases[m.NLeases] = DHCPv6Lease{Addr: [16]byte(a[0:16]), ValidSecs: binary.BigEndian.Uint32(a[20:24])}
				m.NLeases++
			}
		}
	}
	return m, true
}

// dhcp6Option splits the first option off o: its code, its value and what
// follows, or good false when it runs past o.
func dhcp6Option(o []byte) (code uint16, v, rest []byte, good bool) {
	if len(o) < 4 {
		return 0, nil, nil, false
	}
	n := int(binary.BigEndian.Uint16(o[2:4]))
	if len(o) < 4+n {
		return 0, nil, nil, false
	}
	return binary.BigEndian.Uint16(o[0:2]), o[4 : 4+n], o[4+n:], true
}

// dhcp6Released queues, for releaseLeases, the addresses a client's DHCPv6
// Release or Decline gives up: the IAADDRs of its IA_NAs. l4 is a whole UDP
// datagram whose length checkTransport checked.
func (c *Checker) dhcp6Released(l4 []byte) {
	if binary.BigEndian.Uint16(l4[0:2]) != portDHCPv6Client || binary.BigEndian.Uint16(l4[2:4]) != portDHCPv6Server {
		return
	}
	b := l4[8:binary.BigEndian.Uint16(l4[4:6])]
	if len(b) < 4 || b[0] != dhcp6Release && b[0] != dhcp6Decline {
		return
	}
	for o := b[4:]; len(o) > 0; {
		code, v, rest, good := dhcp6Option(o)
		if !good || code == dhcp6OptIANA && len(v) < 12 {
			return
		}
		o = rest
		if code != dhcp6OptIANA {
			continue
		}
		for sub := v[12:]; len(sub) > 0 && c.nreleased < maxReleased; {
			code, a, rest, good := dhcp6Option(sub)
			if !good {
				return
			}
			sub = rest
			if code == dhcp6OptIAAddr && len(a) >= 16 {
				c.released[c.nreleased] = bindKey(a[0:16])
				c.nreleased++
			}
		}
	}
}

// SnoopReply6 applies a DHCPv6 Reply the TAP is sending to the client MAC
// m.ClientMAC, live on port (the engine checks): each address with a valid
// lifetime is leased to that MAC on port for that lifetime, and one with a
// lifetime of 0 is withdrawn from it. Addresses outside the --ipv6 prefix,
// link-local ones and the TAP's lease nothing. It reports whether the
// leases changed.
func (p *Policy) SnoopReply6(m *DHCPv6Reply, port uint32, now int64) bool {
	if p.leases == nil || !p.ipv6 {
		return false
	}
	p.lock()
	defer p.unlock()
	changed := false
	for i := 0; i < m.NLeases; i++ {
		l := &m.Leases[i]
		k := bindKey(l.Addr)
		if l.ValidSecs == 0 {
			if j := p.leases.find(&k); j >= 0 && p.leases.slots[j].mac == m.ClientMAC {
				p.leases.remove(uint32(j))
				changed = true
			}
			continue
		}
		if linkLocal6(&l.Addr) || p.isTap6(&l.Addr) || !p.allowed6(&l.Addr) {
			continue
		}
		end := int64(leaseForever)
		if l.ValidSecs != math.MaxUint32 {
			end = now + int64(l.ValidSecs)*int64(time.Second)
		}
		if p.leases.put(&k, m.ClientMAC, port, end) {
			changed = true
		}
	}
	if changed {
		p.revoked()
	}
	return changed
}

func linkLocal6(a *[16]byte) bool { return a[0] == 0xfe && a[1]&0xc0 == 0x80 }
