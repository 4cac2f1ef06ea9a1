// Package secure is vknetd's secure-mode policy: the anti-spoofing rules a
// frame from a client must pass, the extra allowlist for frames delivered to
// the TAP, and the table binding each IP address to the first client MAC
// that used it.
//
// The engine owns a Policy. With one event loop it calls it from that
// goroutine alone and nothing here locks; with several (Share) each loop
// has a Checker of its own, the binding table is changed under a lock,
// and a frame whose addresses its Checker passed before passes without it
// (shared.go). Each Checker decodes with its own gopacket
// DecodingLayerParser and layers, allocated once, so checking a frame
// allocates nothing. PolicySummary states the rules for users.
package secure

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxBindings bounds the binding table when Config.MaxBindings is 0.
const DefaultMaxBindings = 4096

// maxBindingsLimit keeps a mistaken MaxBindings from sizing a table of
// gigabytes (each binding takes two slots of 56 bytes).
const maxBindingsLimit = 1 << 20

// Config is the policy the command line asks for.
type Config struct {
	// Secure false is -U: a pure bridge, every frame passes undecoded.
	Secure bool
	// Network is address/cidrbits from the command line: clients' IPv4
	// sources must be host addresses of Network.Masked(); Network.Addr()
	// is the TAP's address, which no client may claim.
	Network netip.Prefix
	// TapMAC is the TAP's MAC: no client may send from it.
	TapMAC [6]byte
	// IPv6 is --ipv6 PREFIX. Its zero value drops every IPv6 frame. When
	// set, IPv6 sources must be link-local or in IPv6.Masked(); IPv6.Addr()
	// is reserved for the TAP, as is the TAP's EUI-64 link-local address.
	IPv6 netip.Prefix
	// BindingAge is how long a binding lives after the last frame that used
	// its address (the engine passes --mac-age). 0 keeps bindings until
	// their port disconnects.
	BindingAge time.Duration
	// MaxBindings bounds the binding table (0: DefaultMaxBindings; the
	// command passes --mac-max). When it is full a frame from a new address
	// is dropped (BindingTableFull).
	MaxBindings int
	// PortBindings bounds the addresses one port may hold (0: no bound
	// but MaxBindings; the command passes --port-ips), so no client can
	// fill the table. Ports are numbered below MaxPorts.
	PortBindings int
	MaxPorts     int
	// UserBindings bounds the addresses the clients of one user (SetOwner)
	// may hold together outside that user's own UserNets (0: no bound; the
	// command passes --user-ips), so that no user can take the network's
	// addresses from the others.
	UserBindings int
	// UserNets are the --user-net ranges: an address in one is for the
	// clients of its user alone, and a user with ranges binds IPv4
	// addresses only inside them. Disjoint, inside Network (CheckUserNets).
	UserNets []UserNet
	// IPSource is --ip-source: with IPSourceDHCP a client's IPv4 and
	// global IPv6 addresses are the ones the host's DHCP and DHCPv6 servers
	// leased to its MACs (leases.go), in a table of MaxBindings leases.
	IPSource IPSource
	// DHCPServers are the Ethernet sources, besides TapMAC, whose DHCP and
	// DHCPv6 replies lease addresses with IPSourceDHCP (--dhcp-server: a
	// server or relay on a bridged LAN, or on another host over VXLAN).
	// Replies from any other source lease nothing: with -b or --vxlan the
	// TAP's side is more than the host, and whoever can send there could
	// otherwise forge an ACK for a client of its own.
	DHCPServers [][6]byte
}

// Policy holds the configuration and the IP-to-MAC binding table. It is
// owned by the engine's event loop: its methods and its Checkers' methods
// must all be called from that one goroutine, unless Share was called.
type Policy struct {
	secure bool
	// shared: several goroutines use the policy (Share); mu then guards
	// the bindings, the leases and the ports' users. version counts the
	// changes that may revoke a claim, refresh is refreshEvery (shared.go).
	shared  bool
	refresh int64
	mu      sync.Mutex
	_       [64]byte // version, read per frame by every loop, off mu's line
	version atomic.Uint64
	_       [56]byte
	// Addresses are kept as integers and byte arrays rather than netip
	// values: the per-frame checks are then a few ALU operations.
	net4, mask4, tap4 uint32
	// reserveEnds: the prefix has a distinct network and broadcast address
	// (length <= 30), which are refused as sources.
	reserveEnds bool
	tapMAC      [6]byte
	tapMACWord  uint64 // tapMAC as macWord reads it
	ipv6        bool
	net6, mask6 [2]uint64
	tap6        [16]byte
	tap6LL      [16]byte // EUI-64 link-local of tapMAC
	age         int64    // ns; 0 = no aging
	table       bindTable
	// ranges are the --user-net ranges sorted by address; users is each
	// port's user (SetOwner), when there are ranges or a user bound.
	ranges []userRange
	users  []portUser
	leases *leaseTable // nil unless --ip-source dhcp
	// dhcpServers are Config.DHCPServers: whose replies lease, besides the
	// TAP's own.
	dhcpServers [][6]byte
}

// New checks cfg and builds the policy. Its errors name the option at fault.
func New(cfg Config) (*Policy, error) {
	if !cfg.Secure {
		return &Policy{}, nil
	}
	n := cfg.Network
	if !n.IsValid() {
		return nil, errors.New("secure mode needs address/cidrbits (for example 198.18.0.1/16), or -U for a plain bridge")
	}
	if !n.Addr().Is4() {
		return nil, fmt.Errorf("address/cidrbits %s: secure mode needs an IPv4 address and prefix", n)
	}
	if n.Bits() == 0 {
		return nil, fmt.Errorf("address/cidrbits %s: a /0 prefix would let clients use any source; give the clients' subnet, e.g. /24", n)
	}
	if cfg.TapMAC == [6]byte{} {
		return nil, errors.New("secure: the TAP's MAC address is unset (Config.TapMAC)")
	}
	if cfg.BindingAge < 0 {
		return nil, fmt.Errorf("--mac-age %v: must not be negative", cfg.BindingAge)
	}
	max := cfg.MaxBindings
	switch {
	case max == 0:
		max = DefaultMaxBindings
	case max < 0 || max > maxBindingsLimit:
		return nil, fmt.Errorf("--mac-max %d: the IP binding table holds 1 to %d addresses", max, maxBindingsLimit)
	}
	if cfg.PortBindings < 0 || cfg.PortBindings > 0 && cfg.MaxPorts <= 0 {
		return nil, fmt.Errorf("--port-ips %d: needs a positive limit and the number of ports (Config.MaxPorts)", cfg.PortBindings)
	}
	if cfg.UserBindings < 0 || cfg.UserBindings > 0 && cfg.MaxPorts <= 0 {
		return nil, fmt.Errorf("--user-ips %d: needs a positive limit and the number of ports (Config.MaxPorts)", cfg.UserBindings)
	}
	ranges, err := userRanges(n, cfg.UserNets)
	if err != nil {
		return nil, err
	}
	if len(ranges) > 0 && cfg.MaxPorts <= 0 {
		return nil, errors.New("--user-net: needs the number of ports (Config.MaxPorts)")
	}
	p := &Policy{
		secure:      true,
		mask4:       ^uint32(0) << (32 - n.Bits()),
		tap4:        be32(n.Addr().As4()),
		reserveEnds: n.Bits() <= 30,
		tapMAC:      cfg.TapMAC,
		tapMACWord:  macWord(cfg.TapMAC[:]),
		age:         int64(cfg.BindingAge),
		table:       newBindTable(max, cfg.PortBindings, cfg.UserBindings, cfg.MaxPorts),
		ranges:      ranges,
	}
	if cfg.UserBindings > 0 || len(ranges) > 0 {
		p.users = make([]portUser, cfg.MaxPorts)
		for i := range p.users {
			p.users[i].uid = -1
		}
	}
	p.net4 = p.tap4 & p.mask4
	switch cfg.IPSource {
	case IPSourceFirstUse:
	case IPSourceDHCP:
		p.leases = newLeaseTable(max)
		p.dhcpServers = append([][6]byte(nil), cfg.DHCPServers...)
	default:
		return nil, fmt.Errorf("--ip-source %v: unknown", cfg.IPSource)
	}
	if v6 := cfg.IPv6; v6.IsValid() {
		a := v6.Addr()
		switch {
		case !a.Is6() || v6.Overlaps(mapped4):
			// IPv4-mapped addresses would share binding keys with IPv4.
			return nil, fmt.Errorf("--ipv6 %s: not an IPv6 prefix (or it covers IPv4-mapped addresses ::ffff:0:0/96)", v6)
		case v6.Bits() == 0:
			return nil, fmt.Errorf("--ipv6 %s: a /0 prefix would let clients use any source; give the clients' prefix, e.g. /64", v6)
		case a.IsMulticast():
			return nil, fmt.Errorf("--ipv6 %s: a multicast prefix cannot hold client addresses", v6)
		case a.IsLinkLocalUnicast():
			return nil, fmt.Errorf("--ipv6 %s: link-local addresses are always allowed; give the global or unique-local prefix the clients use", v6)
		}
		p.ipv6 = true
		var m [16]byte
		for i := 0; i < v6.Bits(); i++ {
			m[i/8] |= 0x80 >> (i % 8)
		}
		p.mask6 = split16(m)
		n6 := split16(a.As16())
		p.net6 = [2]uint64{n6[0] & p.mask6[0], n6[1] & p.mask6[1]}
		p.tap6 = a.As16()
		p.tap6LL = eui64LinkLocal(cfg.TapMAC).As16()
	}
	return p, nil
}

var mapped4 = netip.MustParsePrefix("::ffff:0:0/96")

func be32(b [4]byte) uint32 { return binary.BigEndian.Uint32(b[:]) }

func split16(a [16]byte) [2]uint64 {
	return [2]uint64{binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])}
}

// eui64LinkLocal is the link-local address Linux gives an interface by
// default (addr_gen_mode eui64), so a client cannot claim the TAP's.
func eui64LinkLocal(mac [6]byte) netip.Addr {
	return netip.AddrFrom16([16]byte{
		0xfe, 0x80, 0, 0, 0, 0, 0, 0,
		mac[0] ^ 0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5],
	})
}

// host4 reports whether a is an address a client may use as IPv4 source or
// ARP sender: inside the CIDR and not its network or broadcast address.
func (p *Policy) host4(a uint32) bool {
	if a&p.mask4 != p.net4 {
		return false
	}
	return !p.reserveEnds || (a != p.net4 && a != p.net4|^p.mask4)
}

// allowed6 reports whether a is an IPv6 address a client may use:
// link-local (fe80::/10) or in the --ipv6 prefix.
func (p *Policy) allowed6(a *[16]byte) bool {
	if a[0] == 0xfe && a[1]&0xc0 == 0x80 {
		return true
	}
	w := split16(*a)
	return w[0]&p.mask6[0] == p.net6[0] && w[1]&p.mask6[1] == p.net6[1]
}

func (p *Policy) isTap6(a *[16]byte) bool {
	return p.ipv6 && (*a == p.tap6 || *a == p.tap6LL)
}

// Share makes the policy safe for several goroutines, each with its own
// Checkers (the engine's --workers): the binding table is then changed
// under a lock, and read without one (shared.go). Call it before the
// goroutines start.
func (p *Policy) Share() {
	p.shared = true
	p.refresh = refreshEvery(time.Duration(p.age))
	p.version.Store(1) // a Checker's empty memory is version 0: never current
}

// lock and unlock guard the bindings, leases and users of a shared policy.
func (p *Policy) lock() {
	if p.shared {
		p.mu.Lock()
	}
}

func (p *Policy) unlock() {
	if p.shared {
		p.mu.Unlock()
	}
}

// RemovePort releases the bindings of a client that disconnected, so its
// addresses are free for the next client at once.
func (p *Policy) RemovePort(port uint32) {
	if !p.secure {
		return
	}
	p.lock()
	defer p.unlock()
	p.table.removeIf(func(b *binding) bool { return b.port == port })
	p.removePortLeases(port)
	p.revoked()
}

// Expire releases bindings whose address has not been used for BindingAge
// (with Share, up to refreshEvery more: shared.go),
// and those past their fixed end, and leases whose time is up, and returns
// how many it released. now is monotonic nanoseconds, the clock FromClient
// is given. The engine calls it about once a second.
func (p *Policy) Expire(now int64) int {
	if !p.secure {
		return 0
	}
	p.lock()
	defer p.unlock()
	slack := p.slack()
	n := p.expireLeases(now)
	n += p.table.removeIf(func(b *binding) bool {
		if b.until != 0 {
			return now >= b.until
		}
		return p.age != 0 && now-b.last > p.age+slack
	})
	if n > 0 {
		p.revoked()
	}
	return n
}

// Binding is a client binding as Bindings lists it.
type Binding struct {
	IP     netip.Addr
	MAC    [6]byte
	Port   uint32
	Source Source
	// Expires is when the binding ends unless used again (monotonic ns,
	// the clock FromClient is given), or a fixed end (a lease's); 0
	// when it lasts as long as its port.
	Expires int64
}

// Bindings calls fn for every client binding, in no particular order. The
// TAP's own addresses are fixed by the configuration and not listed.
func (p *Policy) Bindings(fn func(Binding)) {
	if !p.secure {
		return
	}
	p.lock()
	defer p.unlock()
	for i := range p.table.slots {
		b := &p.table.slots[i]
		if !b.used {
			continue
		}
		e := b.until
		if e == 0 && p.age != 0 {
			e = b.last + p.age + p.slack()
		}
		fn(Binding{IP: netip.AddrFrom16(b.key).Unmap(), MAC: b.mac, Port: b.port, Source: b.source, Expires: e})
	}
	// With --ip-source dhcp the IPv4 and global IPv6 bindings are the
	// leases; eachLease also gives their expiry.
	p.eachLease(func(ip netip.Addr, mac [6]byte, port uint32, end int64) {
		fn(Binding{IP: ip, MAC: mac, Port: port, Source: Lease, Expires: end})
	})
}

// NumBindings returns how many client bindings the table holds.
func (p *Policy) NumBindings() int {
	p.lock()
	defer p.unlock()
	return p.table.count
}
