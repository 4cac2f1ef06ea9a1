package secure

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"strings"
	"time"
)

// IPSource says where a client's right to an address comes from
// (--ip-source).
type IPSource uint8

const (
	// IPSourceFirstUse binds an address to the first client MAC and port
	// that uses it (the binding table).
	IPSourceFirstUse IPSource = iota
	// IPSourceDHCP binds an address to the client MAC the host's DHCP
	// (or DHCPv6) server leased it to, on the port that MAC is live on, for
	// the lease time: a client may use only addresses leased to its MACs,
	// but for IPv6 link-local ones, which stay first use.
	IPSourceDHCP
)

var ipSourceNames = [...]string{IPSourceFirstUse: "first-use", IPSourceDHCP: "dhcp"}

func (s IPSource) String() string {
	if int(s) < len(ipSourceNames) {
		return ipSourceNames[s]
	}
	return fmt.Sprintf("ip-source-%d", s)
}

// ParseIPSource reads --ip-source.
func ParseIPSource(s string) (IPSource, error) {
	for i, n := range ipSourceNames {
		if s == n {
			return IPSource(i), nil
		}
	}
	return 0, fmt.Errorf("--ip-source %q: want %s", s, strings.Join(ipSourceNames[:], " or "))
}

// leaseForever is the end of an infinite lease (lease time 0xffffffff).
const leaseForever = math.MaxInt64

// leaseTable holds the leases the host's DHCP servers granted (DHCPv4, and
// DHCPv6 with --ipv6), keyed by address: a binding table of its own (sized
// once in New, so the per-frame lookups and the snooped ACKs never
// allocate) whose entries have the source Lease and a fixed end (until)
// that comes from the server, not from use. It is apart from the first-use
// table because a lease exists before its client uses the address, and
// counts against no port's or user's limit.
type leaseTable struct{ bindTable }

func newLeaseTable(max int) *leaseTable {
	return &leaseTable{newBindTable(max, 0, 0, 0)}
}

// put records or renews the lease of k until end. It reports false when k
// is new and the table is full.
func (t *leaseTable) put(k *bindKey, mac [6]byte, port uint32, end int64) bool {
	i := t.find(k)
	if i < 0 {
		if t.count >= t.max {
			return false
		}
		i = t.insert(k, mac, port, 0, Lease, 0)
	}
	// The server is the authority: a renewal, or the address leased anew
	// to another client, replaces what was there.
	s := &t.slots[i]
	s.mac, s.port, s.until = mac, port, end
	return true
}

// leasedTo reports whether k is leased, at now, to mac on port.
func (t *leaseTable) leasedTo(k *bindKey, mac [6]byte, port uint32, now int64) bool {
	i := t.find(k)
	if i < 0 {
		return false
	}
	s := &t.slots[i]
	return s.mac == mac && s.port == port && now < s.until
}

// IPSource returns the --ip-source the policy enforces.
func (p *Policy) IPSource() IPSource {
	if p.leases != nil {
		return IPSourceDHCP
	}
	return IPSourceFirstUse
}

// Leases reports whether bindings come from DHCP leases (--ip-source dhcp),
// so that the engine reads the DHCP replies the TAP sends.
func (p *Policy) Leases() bool { return p.leases != nil }

// LeasesFrom says whether a DHCP or DHCPv6 reply from the Ethernet source
// src may lease addresses: the TAP's own MAC (the host's server) or a
// Config.DHCPServers source.
func (p *Policy) LeasesFrom(src [6]byte) bool {
	if p.leases == nil {
		return false
	}
	if src == p.tapMAC {
		return true
	}
	for _, s := range p.dhcpServers {
		if s == src {
			return true
		}
	}
	return false
}

// SnoopReply applies a DHCPACK or DHCPNAK the TAP is sending: an ACK leases
// m.Addr to m.ClientMAC on port for the lease time from now, a NAK ends
// every IPv4 lease of m.ClientMAC. The engine gives the port only when the
// client MAC is live on a client port and the reply goes there; port is
// ignored for a NAK. It reports whether the leases changed. An ACK without
// an address (the answer to DHCPINFORM) or lease time, or for an address
// no client may use (outside the network, or the TAP's), leases nothing.
func (p *Policy) SnoopReply(m *DHCPReply, port uint32, now int64) bool {
	if p.leases == nil {
		return false
	}
	p.lock()
	defer p.unlock()
	changed := false
	switch m.Type {
	case DHCPNak:
		// Only its IPv4 leases: DHCPv6 is another server's business.
		changed = p.leases.removeIf(func(l *binding) bool { return l.mac == m.ClientMAC && is4(&l.key) }) > 0
	case DHCPAck:
		if m.Addr == 0 || !m.HasLeaseTime || m.Addr == p.tap4 || !p.host4(m.Addr) {
			return false
		}
		end := int64(leaseForever)
		if m.LeaseSecs != math.MaxUint32 {
			end = now + int64(m.LeaseSecs)*int64(time.Second)
		}
		k := key4(m.Addr)
		// A lease given to another MAC or port takes it from the first.
		changed = p.leases.put(&k, m.ClientMAC, port, end)
	}
	if changed {
		p.revoked()
	}
	return changed
}

// EachLease calls fn for every lease (IPv4 and IPv6) with the monotonic ns
// at which it ends (math.MaxInt64: never), in no particular order. It is the
// hook for listing a binding's source and expiry (vknetctl bindings).
func (p *Policy) EachLease(fn func(ip netip.Addr, mac [6]byte, port uint32, end int64)) {
	p.lock()
	defer p.unlock()
	p.eachLease(fn)
}

func (p *Policy) eachLease(fn func(ip netip.Addr, mac [6]byte, port uint32, end int64)) {
	if p.leases == nil {
		return
	}
	for i := range p.leases.slots {
		l := &p.leases.slots[i]
		if l.used {
			fn(netip.AddrFrom16(l.key).Unmap(), l.mac, l.port, l.until)
		}
	}
}

// NumLeases returns how many leases the policy holds.
func (p *Policy) NumLeases() int {
	if p.leases == nil {
		return 0
	}
	p.lock()
	defer p.unlock()
	return p.leases.count
}

// expireLeases ends the leases whose time is up.
func (p *Policy) expireLeases(now int64) int {
	if p.leases == nil {
		return 0
	}
	return p.leases.removeIf(func(l *binding) bool { return now >= l.until })
}

// removePortLeases ends the leases of a client that disconnected: a port
// number is reused, and the client, wherever it reconnects, asks its server
// again.
func (p *Policy) removePortLeases(port uint32) {
	if p.leases != nil {
		p.leases.removeIf(func(l *binding) bool { return l.port == port })
	}
}

// bindLeased is Bind with --ip-source dhcp. The frame's IPv4 and global
// IPv6 addresses must be leased, at now, to its MAC on its port, or lie in
// a --user-net range of its port's user (a static address the operator
// gave that user); its IPv6 link-local addresses, which no server hands
// out, are bound on first use. Only once all passed do the leases a
// release gives back end.
func (c *Checker) bindLeased(mac [6]byte, now int64) Reason {
	n := 0
	for i := 0; i < c.nclaims; i++ {
		k := &c.claims[i]
		if linkLocal6((*[16]byte)(k)) || c.inOwnRange(k) {
			c.claims[n] = *k
			n++
			continue
		}
		if !c.p.leases.leasedTo(k, mac, c.port, now) {
			return IPNotLeased
		}
	}
	c.nclaims = n
	if n != 0 {
		if r := c.bind(mac, now); r != Pass {
			return r
		}
	}
	if c.dhcp6Message() {
		// A DHCPv6 client message, which clients send without extension
		// headers (with some, the release is not seen and the lease runs
		// out instead): whole, its UDP length checked by checkTransport.
		c.dhcp6Released(c.frame[14+40:])
	}
	if c.nreleased != 0 {
		c.releaseLeases(mac)
	}
	return Pass
}

// inOwnRange says whether k lies in a --user-net range of the user of the
// checked frame's port: such an address is bound as in first-use mode
// (bind gives it the source Range), leased or not.
func (c *Checker) inOwnRange(k *bindKey) bool {
	if len(c.p.ranges) == 0 || int(c.port) >= len(c.p.users) {
		return false
	}
	src, r := c.p.source(k, c.p.users[c.port])
	return r == Pass && src == Range
}

// releaseLeases ends the leases a DHCPRELEASE (or DHCPv6 Release or
// Decline) that passed every rule gives back, those of its own MAC and
// port: a client frees only what is its own.
func (c *Checker) releaseLeases(mac [6]byte) {
	t := c.p.leases
	for i := 0; i < c.nreleased; i++ {
		if j := t.find(&c.released[i]); j >= 0 && t.slots[j].mac == mac && t.slots[j].port == c.port {
			t.remove(uint32(j))
			c.p.revoked()
		}
	}
}

// is4 reports whether k is an IPv4 address (::ffff:a.b.c.d).
func is4(k *bindKey) bool { return [12]byte(k[:12]) == [12]byte{10: 0xff, 11: 0xff} }

// key4 is the table key of an IPv4 address.
func key4(a uint32) (k bindKey) {
	putKey4(&k, a)
	return k
}

// putKey4 stores key4(a) into *k as the two words key4Words makes, the
// stores bind's hash reads back as such (setClaim4).
func putKey4(k *bindKey, a uint32) {
	lo, hi := key4Words(a)
	binary.LittleEndian.PutUint64(k[:8], lo)
	binary.LittleEndian.PutUint64(k[8:], hi)
}

// key4Words is key4(a) as two little-endian words: ::ffff:a.b.c.d, the
// first eight bytes zero, then 0, 0, 0xff, 0xff and a in network order.
func key4Words(a uint32) (lo, hi uint64) {
	return 0, 0xffff<<16 | uint64(bits.ReverseBytes32(a))<<32
}
