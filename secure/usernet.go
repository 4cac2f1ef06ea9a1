package secure

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
)

// Users' addresses. The binding table alone is first come, first served:
// one user with many connections could bind every address of the network,
// or a neighbour's static address before its VM boots. So each client port
// belongs to a user (SetOwner, the uid that connected it, as for the MAC
// table's --user-macs), and
//   - the addresses a user's clients hold outside that user's own ranges
//     are bounded together (Config.UserBindings, --user-ips), IPv6 ones
//     included: they fill the same table, whose other users would
//     otherwise find it full (BindingTableFull);
//   - an address in a user's range (Config.UserNets, --user-net) can be
//     bound only by that user's clients, and a user with ranges binds
//     IPv4 addresses only inside them.
// Both are checked only when an address is first bound: the ranges are fixed
// and a port's user does not change while it holds bindings, so the frames
// that refresh a binding cost nothing more.

// UserNet is one --user-net USER=CIDR: the IPv4 addresses of Prefix belong
// to the clients of UID.
type UserNet struct {
	UID    int32
	Prefix netip.Prefix
	// Given is the flag's value as the user wrote it, for messages.
	Given string
}

// userRange is a UserNet as the per-frame path reads it.
type userRange struct {
	lo, hi uint32 // first and last address, inclusive
	uid    int32
}

// portUser is what the policy knows of a port's user.
type portUser struct {
	owner  uint32 // the engine's number for the user, 0: none
	uid    int32  // -1 when owner is 0
	ranged bool   // uid has --user-net ranges
}

// CheckUserNets refuses --user-net ranges that are not IPv4 prefixes inside
// network, or that overlap each other. Its errors name the flag and values.
func CheckUserNets(network netip.Prefix, nets []UserNet) error {
	_, err := userRanges(network, nets)
	return err
}

func userRanges(network netip.Prefix, nets []UserNet) ([]userRange, error) {
	rs := make([]userRange, 0, len(nets))
	for _, n := range nets {
		p := n.Prefix
		switch {
		case n.UID < 0:
			return nil, fmt.Errorf("--user-net %s: the user must be a name or a uid of 0 or more", n.Given)
		case !p.IsValid() || !p.Addr().Is4():
			return nil, fmt.Errorf("--user-net %s: the range must be an IPv4 prefix inside address/cidrbits (%s), e.g. USER=%s", n.Given, network, network.Masked())
		case p != p.Masked():
			return nil, fmt.Errorf("--user-net %s: %s has host bits set: did you mean %s?", n.Given, p, p.Masked())
		case !network.IsValid() || p.Bits() < network.Bits() || !network.Masked().Contains(p.Addr()):
			return nil, fmt.Errorf("--user-net %s: %s is not inside the network address/cidrbits (%s): give a range of the clients' subnet", n.Given, p, network.Masked())
		}
		lo := be32(p.Addr().As4())
		rs = append(rs, userRange{lo: lo, hi: lo | ^(^uint32(0) << (32 - p.Bits())), uid: n.UID})
	}
	order := make([]int, len(nets))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(rs[a].lo, rs[b].lo) })
	sorted := make([]userRange, len(rs))
	for i, j := range order {
		sorted[i] = rs[j]
		if i > 0 && sorted[i-1].hi >= sorted[i].lo {
			return nil, fmt.Errorf("--user-net %s overlaps --user-net %s: each address may belong to one user only",
				nets[order[i-1]].Given, nets[j].Given)
		}
	}
	return sorted, nil
}

// rangeOf returns the index of the range holding a, or -1: a binary search
// over the sorted, disjoint ranges, which never allocates.
func (p *Policy) rangeOf(a uint32) int {
	lo, hi := 0, len(p.ranges)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if p.ranges[m].hi < a {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(p.ranges) && p.ranges[lo].lo <= a {
		return lo
	}
	return -1
}

// source decides whether the client on a port of user u may bind k, an
// address bound to no one, and how.
func (p *Policy) source(k *bindKey, u portUser) (Source, Reason) {
	if len(p.ranges) == 0 || binary.BigEndian.Uint64(k[0:8]) != 0 || binary.BigEndian.Uint32(k[8:12]) != 0xffff {
		// No ranges, or IPv6: ranges are IPv4.
		return FirstUse, Pass
	}
	i := p.rangeOf(binary.BigEndian.Uint32(k[12:16]))
	switch {
	case i < 0 && u.ranged:
		return FirstUse, IPOutsideUserNet
	case i < 0:
		return FirstUse, Pass
	case p.ranges[i].uid != u.uid || u.owner == 0:
		return FirstUse, IPInOtherUserNet
	}
	return Range, Pass
}

// SetOwner makes owner (a small number, 1 and up, below Config.MaxPorts;
// 0 for none) with that uid the user of port, as the engine does for the
// MAC table when a client connects, and owner 0 when it leaves. Call it
// while the port holds no bindings.
func (p *Policy) SetOwner(port, owner uint32, uid int32) {
	if !p.secure || int(port) >= len(p.users) {
		return
	}
	u := portUser{owner: owner, uid: uid}
	if owner == 0 {
		u.uid = -1
	}
	for _, r := range p.ranges {
		if r.uid == u.uid {
			u.ranged = true
		}
	}
	p.lock()
	p.users[port] = u
	p.revoked() // a range claim passed for the old user
	p.unlock()
}
