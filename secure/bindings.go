package secure

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"strconv"
)

// bindKey is an address in 16-byte form: IPv4 as ::ffff:a.b.c.d, which no
// accepted IPv6 source can be (IPv4-mapped sources are outside every
// allowed IPv6 range), so the two families share one table.
type bindKey [16]byte

// Source says how an address came to be bound, for vknetctl bindings. A
// source that grants an address for a fixed time (a DHCP lease) sets
// binding.until; FirstUse and Range bindings live by use.
type Source uint8

const (
	// FirstUse: the first client to use an address in no --user-net
	// range, first come, first served. It counts against the user's
	// --user-ips.
	FirstUse Source = iota
	// Range: an address in one of the --user-net ranges of the claiming
	// client's user, which no other user may take. It does not count
	// against --user-ips: the range is that user's already.
	Range
	// Lease: with --ip-source dhcp, an address the host's DHCP (or
	// DHCPv6) server leased to the client's MAC, until the lease ends
	// (leases.go keeps these apart from the binding table).
	Lease
)

var sourceNames = [...]string{FirstUse: "first-use", Range: "range", Lease: "lease"}

// String is the source as vknetctl shows it.
func (s Source) String() string {
	if int(s) < len(sourceNames) {
		return sourceNames[s]
	}
	return "source " + strconv.Itoa(int(s))
}

type binding struct {
	key    bindKey
	mac    [6]byte
	used   bool
	source Source
	port   uint32
	home   uint32 // slot the key hashes to, kept so deletion need not rehash
	// owner is the user (Policy.SetOwner) whose --user-ips count holds this
	// binding, 0 when none does (no limit, no user, or a Range binding).
	owner uint32
	last  int64 // monotonic ns of the last frame that used the address
	// until, when not 0, is when the binding ends whatever its use
	// (monotonic ns): for sources that grant an address for a time.
	// Bindings with until 0 live until unused for the aging time.
	until int64
}

// bindTable is an open-addressing hash table with linear probing and
// backward-shift deletion, sized once in New: the per-frame path never
// allocates, and the load factor stays at or below one half because inserts
// stop at max entries (a full table drops the new address instead).
type bindTable struct {
	slots []binding
	mask  uint32
	count int
	max   int
	seed  uint64 // random per table, so clients cannot pick addresses that collide

	// perPort counts each port's bindings against portMax (0: no limit).
	perPort []uint32
	portMax int
	// perOwner counts each user's FirstUse bindings against ownerMax (0: no
	// limit), indexed by owner (Policy.SetOwner), which is below ports.
	perOwner []uint32
	ownerMax int
}

func newBindTable(max, portMax, ownerMax, ports int) bindTable {
	n := 16
	if want := 2 * max; want > n {
		n = 1 << bits.Len(uint(want-1))
	}
	t := bindTable{
		slots: make([]binding, n),
		mask:  uint32(n - 1),
		max:   max,
		seed:  rand.Uint64() | 1,
	}
	if portMax > 0 {
		t.perPort, t.portMax = make([]uint32, ports), portMax
	}
	if ownerMax > 0 {
		t.perOwner, t.ownerMax = make([]uint32, ports), ownerMax
	}
	return t
}

// portFull reports whether port can take need more bindings.
func (t *bindTable) portFull(port uint32, need int) bool {
	return t.portMax > 0 && (int(port) >= len(t.perPort) || int(t.perPort[port])+need > t.portMax)
}

// ownerFull reports whether owner's clients can take need more FirstUse
// bindings. Owner 0 (a port of no user) is not limited.
func (t *bindTable) ownerFull(owner uint32, need int) bool {
	return t.ownerMax > 0 && owner != 0 && need > 0 &&
		(int(owner) >= len(t.perOwner) || int(t.perOwner[owner])+need > t.ownerMax)
}

func (t *bindTable) hash(k *bindKey) uint32 {
	lo := binary.LittleEndian.Uint64(k[0:8])
	hi := binary.LittleEndian.Uint64(k[8:16])
	h := (lo ^ t.seed) * 0x9e3779b97f4a7c15
	h = (h ^ hi ^ h>>29) * 0xbf58476d1ce4e5b9
	h ^= h >> 32
	return uint32(h) & t.mask
}

// find returns the slot holding k, or -1.
func (t *bindTable) find(k *bindKey) int {
	for i := t.hash(k); ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if !s.used {
			return -1
		}
		if s.key == *k {
			return int(i)
		}
	}
}

// insert adds k, which the caller has checked is absent and fits, for
// port, whose user is owner, and returns its slot.
func (t *bindTable) insert(k *bindKey, mac [6]byte, port, owner uint32, source Source, now int64) int {
	home := t.hash(k)
	i := home
	for t.slots[i].used {
		i = (i + 1) & t.mask
	}
	if t.ownerMax == 0 || source != FirstUse {
		owner = 0
	}
	t.slots[i] = binding{key: *k, mac: mac, used: true, source: source, port: port, home: home, owner: owner, last: now}
	t.count++
	if t.portMax > 0 {
		t.perPort[port]++
	}
	if owner != 0 {
		t.perOwner[owner]++
	}
	return int(i)
}

// remove empties slot i and shifts later members of its probe run back, so
// lookups never need tombstones. Entries only ever move into slot i or into
// slots after it in probe order; removeIf relies on that.
func (t *bindTable) remove(i uint32) {
	if t.portMax > 0 {
		t.perPort[t.slots[i].port]--
	}
	if o := t.slots[i].owner; o != 0 {
		t.perOwner[o]--
	}
	for j := (i + 1) & t.mask; t.slots[j].used; j = (j + 1) & t.mask {
		// The entry at j may fill the hole at i unless its home lies
		// cyclically in (i, j]: then it would move before its home.
		h := t.slots[j].home
		if (j-h)&t.mask >= (j-i)&t.mask {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = binding{}
	t.count--
}

// removeIf deletes every binding drop reports true for and returns how many.
func (t *bindTable) removeIf(drop func(*binding) bool) int {
	n := 0
	for i := 0; i < len(t.slots); {
		s := &t.slots[i]
		if s.used && drop(s) {
			t.remove(uint32(i))
			n++
			// remove may have shifted a not yet examined entry into
			// slot i: look at it again.
			continue
		}
		i++
	}
	return n
}
