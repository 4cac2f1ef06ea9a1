package secure

import (
	"encoding/binary"
	"math"
	"time"
)

// With several event loops (--workers, Share) the bindings are shared, and
// the frames that need them, nearly every frame a client sends, are
// checked without taking the policy's lock: each loop's Checker remembers
// the claims it passed (passedClaim), and a frame whose every claim it
// passed before, at the same version of the policy, passes again without
// looking at the table. The table and the leases still change only under
// the lock, as do the first use of an address, a release, and the
// refresh of a binding's last use.
//
// Revocation. Every change under the lock that could take from a client a
// claim it held (a binding or lease removed or given to another MAC or
// port, a port's user changed) adds one to version before the lock is let
// go; nothing else does (a new binding takes nothing from anyone). A
// remembered claim holds the version it was passed at, read under the
// lock, so it says what the table said then; while version is unchanged,
// no change that could revoke it has finished. A frame passed from memory
// is therefore ordered before the next revoking change, and once that
// change has returned (its version stored, with Go's sequentially
// consistent atomics) every loop's next load of version sees it, misses,
// and takes the lock: a binding removed never passes after its removal is
// visible. A lease also ends by time, with no change at all: a remembered
// leased claim holds the lease's end and is not used at or after it.
//
// Aging. A frame passed from memory does not note its use in the table;
// a loop takes the lock to note it once refreshEvery per claim at most
// (min(age/16, 1s)). A binding's recorded last use may thus lag its true
// last use by up to refreshEvery, and Expire, Bindings and Restore count
// that lag (slack): a binding still never ends before the aging time has
// passed since its last use, and ends at most refreshEvery later.

// passedClaim is a claim a Checker passed under the lock: key, bound to
// mac on port, at version; refreshed is when the binding's last use was
// noted then, until when a leased claim's lease ends (math.MaxInt64 for a
// binding).
type passedClaim struct {
	key       bindKey
	mac       [6]byte
	port      uint32
	version   uint64
	refreshed int64
	until     int64
}

// passedLen is the number of claims a Checker remembers, direct-mapped by
// address: a miss costs only the lock.
const passedLen = 256

func passedSlot(k *bindKey) int {
	return int(binary.LittleEndian.Uint64(k[8:16]) * 0x9e3779b97f4a7c15 >> 56)
}

// refreshEvery is how often a loop notes a binding's use in the shared
// table while it passes the binding's frames from memory.
func refreshEvery(age time.Duration) int64 {
	if age == 0 {
		return math.MaxInt64 // no aging: the last use is never read
	}
	return int64(min(age/16, time.Second))
}

// slack is how far a binding's recorded last use may lag its true one:
// refreshEvery with Share, 0 when one loop notes every frame.
func (p *Policy) slack() int64 {
	if !p.shared || p.age == 0 {
		return 0
	}
	return p.refresh
}

// revoked marks a change that may take a claim from a client: call it
// under the lock, before unlocking.
func (p *Policy) revoked() {
	if p.shared {
		p.version.Add(1)
	}
}

// bindShared is Bind on a shared policy: from the Checker's memory when
// it passed every claim of the frame before at this version of the
// policy, else under the lock.
func (c *Checker) bindShared(now int64) Reason {
	p := c.p
	mac := [6]byte(c.frame[6:12])
	// A release (DHCP, or a DHCPv6 client message that may be one)
	// changes the leases: always under the lock.
	release := c.nreleased != 0 || p.leases != nil && c.dhcp6Message()
	if !release && c.passedBefore(mac, now) {
		return Pass
	}
	claims, n := c.claims, c.nclaims // bindLeased narrows c.claims
	p.mu.Lock()
	if p.leases != nil {
		c.verdict = c.bindLeased(mac, now)
	} else {
		c.verdict = c.bind(mac, now)
	}
	if c.verdict == Pass && !release {
		v := p.version.Load()
		for i := 0; i < n; i++ {
			c.passed[passedSlot(&claims[i])] = passedClaim{
				key: claims[i], mac: mac, port: c.port, version: v,
				refreshed: now, until: c.leaseEnd(&claims[i]),
			}
		}
	}
	p.mu.Unlock()
	return c.verdict
}

// passedBefore: the Checker passed every claim of the frame, from mac on
// its port, at the policy's current version, its lease has not ended, and
// its use was noted less than refreshEvery ago.
func (c *Checker) passedBefore(mac [6]byte, now int64) bool {
	v := c.p.version.Load()
	for i := 0; i < c.nclaims; i++ {
		k := &c.claims[i]
		e := &c.passed[passedSlot(k)]
		if e.version != v || e.key != *k || e.mac != mac || e.port != c.port ||
			now >= e.until || now-e.refreshed >= c.p.refresh {
			return false
		}
	}
	return true
}

// leaseEnd is when the claim k, just passed, stops passing by time alone:
// its lease's end when a lease is what passed it, else never. Under the
// lock.
func (c *Checker) leaseEnd(k *bindKey) int64 {
	t := c.p.leases
	if t == nil || linkLocal6((*[16]byte)(k)) || c.inOwnRange(k) {
		return math.MaxInt64
	}
	if j := t.find(k); j >= 0 {
		return t.slots[j].until
	}
	return 0 // not reached: a leased claim passed
}

// dhcp6Message: the frame is a DHCPv6 client message, which may release
// leases (bindLeased).
func (c *Checker) dhcp6Message() bool {
	return c.kind == kindIPv6 && c.proto == protoUDP && c.frame[14+6] == protoUDP
}
