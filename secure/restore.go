package secure

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Restore puts back a binding a previous daemon held (vknetctl upgrade):
// b as Bindings listed it, its Expires moved to this process's clock (0:
// ends with its port; math.MaxInt64: a lease without end). The port's
// owner must be set (SetOwner) first, so the binding counts against its
// user as before. A binding that no longer fits or conflicts is refused,
// never forced.
func (p *Policy) Restore(b Binding, now int64) error {
	if !p.secure {
		return nil
	}
	p.lock() // a shared policy (--workers): loops may be running
	defer p.unlock()
	p.revoked() // a lease put may replace another's
	k := bindKey(b.IP.As16())
	if b.IP.Is4() {
		a := b.IP.As4()
		k = key4(binary.BigEndian.Uint32(a[:]))
	}
	if b.Source == Lease {
		if p.leases == nil {
			return fmt.Errorf("binding %v: a DHCP lease, and this daemon has no --ip-source dhcp", b.IP)
		}
		if !p.leases.put(&k, b.MAC, b.Port, b.Expires) {
			return fmt.Errorf("binding %v: no room for the lease", b.IP)
		}
		return nil
	}
	t := &p.table
	if t.find(&k) >= 0 {
		return fmt.Errorf("binding %v given twice", b.IP)
	}
	if t.count >= t.max || t.portFull(b.Port, 1) {
		return fmt.Errorf("binding %v: the table or its port is full", b.IP)
	}
	var owner uint32
	if int(b.Port) < len(p.users) {
		owner = p.users[b.Port].owner
	}
	if b.Source == FirstUse && t.ownerFull(owner, 1) {
		return fmt.Errorf("binding %v: its user's --user-ips is full", b.IP)
	}
	// Listed as last use plus the aging time (and the slack).
	last := now
	if b.Expires != 0 && b.Expires != math.MaxInt64 && p.age != 0 {
		last = b.Expires - p.age - p.slack()
	}
	t.insert(&k, b.MAC, b.Port, owner, b.Source, last)
	return nil
}
