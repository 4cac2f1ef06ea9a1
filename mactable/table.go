// Package mactable is the switch's MAC address table: which port each
// unicast source MAC was last seen on, with aging, a table-wide capacity
// and a per-port limit.
//
// One event-loop goroutine learns and looks up a MAC for every frame, so
// Lookup and the refresh path of Learn take no lock and allocate nothing;
// other goroutines (listings, extra workers) may read at the same time.
//
// A full table or port refuses new MACs instead of evicting live ones: the
// original vknetd evicted the least recently used entry, so a client could
// push everyone's entries out with forged source MACs and have their
// traffic flooded to it.
//
// # Layout
//
// The table is an array of open-addressing slots split into power-of-two
// shards. A slot is two atomic words: the key word (live bit | MAC) and the
// value word (port << 40 | last-seen tick). A keyed hash picks the shard
// and the home slot, so a client cannot aim forged MACs at one shard
// without knowing the per-table seed.
//
// Deletion uses backward shift instead of tombstones: the table never
// needs a rebuild (tombstone rebuilds would stall the event loop for a
// whole shard and either allocate or move entries under readers anyway),
// and probe chains stay as short as the live load allows. Moving entries
// under lock-free readers could make a reader miss an entry that is
// present, or pair a key with the value of the entry shifted into its
// slot, so every deletion runs inside a per-shard sequence window
// (seqlock): readers that overlap one retry. Inserts into an empty slot
// (value first, then key) and value-only updates (refresh, move) are
// single-word publications that a reader sees entirely or not at all, so
// they do not open a window and readers of a steadily learning table never
// retry.
package mactable

import (
	"math/bits"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

const (
	liveBit  = 1 << 63
	tickBits = 40
	tickMask = 1<<tickBits - 1
	portMax  = 1<<(64-tickBits) - 1

	// shardSlots is the target shard size: big enough that a uniform hash
	// keeps every shard near the table's 0.5 load, small enough that one
	// shard's lock and sequence window cover little of the table.
	shardSlots = 1024
	maxShards  = 64
)

type slot struct {
	key atomic.Uint64 // 0 = empty, else liveBit | MAC
	val atomic.Uint64 // port<<tickBits | tick
}

type shard struct {
	mu    sync.Mutex    // serializes writers that change the shard's keys or ports
	seq   atomic.Uint32 // odd while a deletion is moving entries
	count int32         // keys in the shard; guarded by mu
	_     [64 - 16]byte // one cache line per shard so writers to different shards do not share one
}

// Table is a MAC table. Its methods are safe for concurrent use: Learn,
// RemovePort, Expire and Flush may run in several goroutines; Lookup never
// blocks and never sees an entry half-written; Walk holds at most one
// shard's writer lock, and only when deletions kept it from a clean copy.
//
// Time is the caller's monotonic clock in nanoseconds (non-decreasing; a
// small step back between goroutines is tolerated). The table keeps it in
// ticks of Granularity (MaxAge/1024 rounded down to a power of two, at most
// about a second). An entry last seen at s is live at now while
// floor(now/G) - floor(s/G) <= ceil(MaxAge/G): it never ages out before
// MaxAge has passed and always has once MaxAge+2G has.
type Table struct {
	slots  []slot
	shards []shard
	ports  []atomic.Int32 // entries per port, aged ones included until reclaimed
	// owner of each port and entries per owner (the sum of its ports'),
	// indexed like ports: an owner has at least one port.
	portOwner []atomic.Uint32
	owners    []atomic.Int32

	seed       uint64
	idxShift   uint   // hash >> idxShift is the home slot's index in slots
	slotBits   uint   // log2 of slots per shard
	slotMask   uint64 // slots per shard - 1
	shardMax   int32  // keys one shard may hold (0.75 load), a bound only a hash collision attack could reach
	tickShift  uint
	maxAge     int64 // in ticks
	capacity   int32 // MaxCapacity fits
	portLimit  int32
	hostPort   int32 // the TAP's port, with hostLimit for a limit (see SetHostPort); -1 none
	hostLimit  int32
	ownerLimit int32

	// The fields above are read by every Lookup; writers update the ones
	// below on every insert and delete. Keep them off the readers' line.
	_           [64]byte
	count       atomic.Int32
	lastReclaim atomic.Int64  // tick of the last reclaim pass run by Learn
	sweeps      atomic.Uint64 // sweeps run, by Expire or reclaim; tests read it
}

// New returns an empty table sized for cfg.
func New(cfg Config) (*Table, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return newTable(cfg, rand.Uint64()), nil
}

func newTable(cfg Config, seed uint64) *Table {
	// Load factor <= 0.5 when the table holds Capacity entries.
	total := uint64(8)
	for total < 2*uint64(cfg.Capacity) {
		total <<= 1
	}
	nshards := total / shardSlots
	if nshards < 1 {
		nshards = 1
	}
	if nshards > maxShards {
		nshards = maxShards
	}
	per := total / nshards
	limit := cfg.PortLimit
	if limit == 0 {
		limit = cfg.Capacity
	}
	shift := uint(bits.Len64(uint64(cfg.MaxAge)/1024)) - 1
	if shift > 30 {
		shift = 30
	}
	tick := int64(1) << shift
	ownerLimit := cfg.OwnerLimit
	if ownerLimit == 0 {
		ownerLimit = cfg.Capacity
	}
	hostLimit := cfg.HostLimit
	if hostLimit == 0 {
		hostLimit = cfg.Capacity
	}
	t := &Table{
		slots:      make([]slot, total),
		shards:     make([]shard, nshards),
		ports:      make([]atomic.Int32, cfg.MaxPorts),
		portOwner:  make([]atomic.Uint32, cfg.MaxPorts),
		owners:     make([]atomic.Int32, cfg.MaxPorts),
		seed:       seed,
		idxShift:   64 - uint(bits.TrailingZeros64(total)),
		slotBits:   uint(bits.TrailingZeros64(per)),
		slotMask:   per - 1,
		shardMax:   int32(per - per/4),
		tickShift:  shift,
		maxAge:     (int64(cfg.MaxAge) + tick - 1) / tick,
		capacity:   int32(cfg.Capacity),
		portLimit:  int32(limit),
		hostPort:   -1,
		hostLimit:  int32(hostLimit),
		ownerLimit: int32(ownerLimit),
	}
	t.lastReclaim.Store(-1 << 63)
	return t
}

// Granularity is the unit the table keeps time in.
func (t *Table) Granularity() time.Duration { return time.Duration(1) << t.tickShift }

// Len is the number of entries held, including aged ones not yet reclaimed.
func (t *Table) Len() int { return int(t.count.Load()) }

// PortLen is the number of entries port holds, including aged ones not yet
// reclaimed; 0 for a port outside 0..MaxPorts-1.
func (t *Table) PortLen(port uint32) int {
	if int(port) >= len(t.ports) {
		return 0
	}
	return int(t.ports[port].Load())
}

// SetOwner makes owner (below MaxPorts; 0 is no owner and no owner limit)
// the owner of port, whose entries then count against OwnerLimit with the
// other ports of that owner. Call it when the port holds no entries: when
// it is created, or after RemovePort.
func (t *Table) SetOwner(port, owner uint32) {
	if int(port) < len(t.ports) && int(owner) < len(t.owners) {
		t.portOwner[port].Store(owner)
	}
}

// OwnerLen is the number of entries the ports of owner hold together,
// aged ones included until reclaimed.
func (t *Table) OwnerLen(owner uint32) int {
	if int(owner) >= len(t.owners) {
		return 0
	}
	return int(t.owners[owner].Load())
}

// take reserves a new entry for port against the port's and its owner's
// limits (the table's count is the caller's).
func (t *Table) take(port uint32) Result {
	if !reserve(&t.ports[port], t.limitOfPort(port)) {
		return PortFull
	}
	owner := t.portOwner[port].Load()
	if !reserve(&t.owners[owner], t.limitOf(owner)) {
		t.ports[port].Add(-1)
		return OwnerFull
	}
	return Learned
}

// move counts an entry off old and onto port; between two ports of one
// owner the owner's count stays as it is.
func (t *Table) move(port, old uint32) Result {
	if !reserve(&t.ports[port], t.limitOfPort(port)) {
		return PortFull
	}
	to, from := t.portOwner[port].Load(), t.portOwner[old].Load()
	if to != from {
		if !reserve(&t.owners[to], t.limitOf(to)) {
			t.ports[port].Add(-1)
			return OwnerFull
		}
		t.owners[from].Add(-1)
	}
	t.ports[old].Add(-1)
	return Moved
}

// give counts off an entry of port that is deleted.
func (t *Table) give(port uint32) {
	t.ports[port].Add(-1)
	t.owners[t.portOwner[port].Load()].Add(-1)
}

// SetHostPort makes port the host's side of the switch (the TAP), behind
// which a bridged LAN or other hosts (VXLAN) may hold many MACs: it has
// HostLimit for a limit instead of PortLimit, and it never takes a MAC
// that is live on another port (Conflict). Call it before the port learns
// anything.
func (t *Table) SetHostPort(port uint32) {
	if int(port) < len(t.ports) {
		t.hostPort = int32(port)
	}
}

func (t *Table) limitOfPort(port uint32) int32 {
	if int32(port) == t.hostPort {
		return t.hostLimit
	}
	return t.portLimit
}

func (t *Table) limitOf(owner uint32) int32 {
	if owner == 0 {
		return t.capacity
	}
	return t.ownerLimit
}

// hash is Fibonacci hashing of the seeded MAC with the high half of the
// 128-bit product folded in. The golden-ratio multiplier spreads runs of
// consecutive MACs (as hypervisors hand them out) over distinct slots; a
// random multiplier measured up to 20 times longer probes on such runs for
// unlucky seeds. The per-table seed keeps a client from computing which
// MACs share a shard or a home slot.
func (t *Table) hash(mac uint64) uint64 {
	hi, lo := bits.Mul64(mac^t.seed, 0x9e3779b97f4a7c15)
	return hi ^ lo
}

// home returns the home slot index of mac. The shift counts are below 64;
// masking them tells the compiler so and saves the out-of-range handling.
func (t *Table) home(mac uint64) uint64 { return t.hash(mac) >> (t.idxShift & 63) }

func (t *Table) shardOf(idx uint64) *shard { return &t.shards[idx>>(t.slotBits&63)] }

func (t *Table) next(i uint64) uint64 { return i&^t.slotMask | (i+1)&t.slotMask }

func pack(port uint32, tick int64) uint64 { return uint64(port)<<tickBits | uint64(tick)&tickMask }

func valPort(v uint64) uint32 { return uint32(v >> tickBits) }

// sinceTicks is now minus the value's tick, sign-extended from tickBits so
// a clock that steps back slightly reads as a small negative age.
func sinceTicks(now int64, v uint64) int64 {
	d := (uint64(now) - v) & tickMask
	return int64(d<<(64-tickBits)) >> (64 - tickBits)
}

func (t *Table) aged(v uint64, nowTick int64) bool { return sinceTicks(nowTick, v) > t.maxAge }

// Lookup returns the port mac was last learned on, unless it has aged out.
func (t *Table) Lookup(mac uint64, now int64) (port uint32, ok bool) {
	return t.lookup(mac, now, nil)
}

// lookup is Lookup, telling h (when not nil) which slot held mac, from
// the same probe (Hint).
func (t *Table) lookup(mac uint64, now int64, h *Hint) (port uint32, ok bool) {
	mac &= macMask
	if mac&groupBit != 0 {
		return 0, false
	}
	want := liveBit | mac
	idx := t.home(mac)
	sh := t.shardOf(idx)
retry:
	for {
		seq := sh.seq.Load()
		if seq&1 != 0 {
			yield() // a writer is shifting entries in this shard
			continue
		}
		i := idx
		for n := uint64(0); n <= t.slotMask; n++ {
			s := &t.slots[i]
			k := s.key.Load()
			if k == want {
				v := s.val.Load()
				if sh.seq.Load() != seq {
					continue retry
				}
				if t.aged(v, now>>t.tickShift) {
					return 0, false
				}
				if h != nil {
					t.point(h, mac, i)
				}
				return valPort(v), true
			}
			if k == 0 {
				if sh.seq.Load() != seq {
					continue retry
				}
				return 0, false
			}
			i = t.next(i)
		}
	}
}

// Learn records that mac was seen as a source on port at now. See Result
// for the outcomes. port must be below MaxPorts; Learn panics otherwise, as
// an index would.
//
// When the table or the port is full, Learn first reclaims aged entries,
// at most once per Granularity, so a flood of new MACs against a full
// table costs one sweep per tick rather than one per frame.
func (t *Table) Learn(mac uint64, port uint32, now int64) Result {
	return t.learn(mac, port, now, nil)
}

// learn is Learn, telling h (when not nil) which slot holds mac once it
// is refreshed or learned (Hint).
func (t *Table) learn(mac uint64, port uint32, now int64, h *Hint) Result {
	mac &= macMask
	if mac&groupBit != 0 {
		return Multicast
	}
	if int(port) >= len(t.ports) {
		panic("mactable: Learn on port " + strconv.FormatUint(uint64(port), 10) + ", beyond MaxPorts")
	}
	nowTick := now >> t.tickShift
	idx := t.home(mac)
	if at, ok := t.refresh(mac, idx, port, nowTick); ok {
		if h != nil {
			t.point(h, mac, at)
		}
		return Refreshed
	}
	r := t.learnLocked(mac, idx, port, nowTick)
	if (r == TableFull || r == PortFull || r == OwnerFull) && t.reclaimDue(nowTick) {
		t.Expire(now)
		r = t.learnLocked(mac, idx, port, nowTick)
	}
	if h != nil && (r == Learned || r == Moved) {
		t.remember(h, mac) // rare: a MAC new to the table or to the port
	}
	return r
}

// refresh is Learn's lock-free path: the MAC is live on this port. It
// stores only when the tick has moved on, and then with a CAS so it cannot
// undo a concurrent writer's move. A sequence change means a deletion may
// have moved entries under it; the locked path then decides (redoing an
// already applied refresh is harmless). at is the MAC's slot when ok.
func (t *Table) refresh(mac, idx uint64, port uint32, nowTick int64) (at uint64, ok bool) {
	sh := t.shardOf(idx)
	seq := sh.seq.Load()
	if seq&1 != 0 {
		return 0, false
	}
	want := liveBit | mac
	i := idx
	for n := uint64(0); n <= t.slotMask; n++ {
		s := &t.slots[i]
		k := s.key.Load()
		if k == want {
			return i, t.refreshSlot(s, sh, seq, port, nowTick)
		}
		if k == 0 {
			return 0, false
		}
		i = t.next(i)
	}
	return 0, false
}

// refreshSlot is refresh once s, in shard sh, was seen to hold the MAC
// with the shard's sequence at seq (even).
func (t *Table) refreshSlot(s *slot, sh *shard, seq uint32, port uint32, nowTick int64) bool {
	v := s.val.Load()
	if valPort(v) != port || t.aged(v, nowTick) {
		return false
	}
	if sinceTicks(nowTick, v) > 0 && !s.val.CompareAndSwap(v, pack(port, nowTick)) {
		return false
	}
	return sh.seq.Load() == seq
}

func (t *Table) learnLocked(mac, idx uint64, port uint32, nowTick int64) Result {
	sh := t.shardOf(idx)
	want := liveBit | mac
	sh.mu.Lock()
	i := idx
	for {
		s := &t.slots[i]
		k := s.key.Load()
		if k == want {
			r := t.update(s, port, nowTick)
			sh.mu.Unlock()
			return r
		}
		if k == 0 {
			break
		}
		i = t.next(i) // a shard always has an empty slot: shardMax < its size
	}
	var r Result
	switch {
	case sh.count >= t.shardMax:
		r = TableFull
	case !reserve(&t.count, t.capacity):
		r = TableFull
	default:
		if r = t.take(port); r != Learned {
			t.count.Add(-1)
			break
		}
		s := &t.slots[i]
		// Value before key: a reader that sees the key sees its value.
		s.val.Store(pack(port, nowTick))
		s.key.Store(want)
		sh.count++
		r = Learned
	}
	sh.mu.Unlock()
	return r
}

// update handles a MAC already in the table, live or aged. Called with the
// shard locked.
func (t *Table) update(s *slot, port uint32, nowTick int64) Result {
	v := s.val.Load()
	old := valPort(v)
	aged := t.aged(v, nowTick)
	if old == port {
		if sinceTicks(nowTick, v) > 0 {
			s.val.Store(pack(port, nowTick))
		}
		if aged {
			return Learned
		}
		return Refreshed
	}
	if !aged && int32(port) == t.hostPort {
		return Conflict
	}
	if r := t.move(port, old); r != Moved {
		return r
	}
	s.val.Store(pack(port, nowTick))
	if aged {
		return Learned
	}
	return Moved
}

// yield is out of line so that the rare wait does not cost Lookup's loop
// its registers.
//
//go:noinline
func yield() { runtime.Gosched() }

// reserve takes one unit of c if that keeps it at or below limit. A CAS
// loop rather than Add-then-check so that writers on different shards
// cannot overshoot the limit together.
func reserve(c *atomic.Int32, limit int32) bool {
	for {
		n := c.Load()
		if n >= limit {
			return false
		}
		if c.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// reclaimDue claims the right to run a reclaim sweep at nowTick: one per
// tick across all writers.
func (t *Table) reclaimDue(nowTick int64) bool {
	last := t.lastReclaim.Load()
	return nowTick > last && t.lastReclaim.CompareAndSwap(last, nowTick)
}

// Take moves mac from port from to port to at now, where Learn would not
// (the host port never takes a live MAC) or the caller's rules would not:
// the caller has decided that from no longer speaks for the MAC (a VM that
// moved to another port or host and announced itself there). The decision
// was made on what the caller looked up earlier, and another goroutine may
// have moved or learned the MAC since: so Take moves it only if it is
// still on from, and says Conflict if it is live on a third port now. A
// MAC that is on to already, aged, or no longer in the table is learned
// on to as Learn would. Limits apply as in Learn.
func (t *Table) Take(mac uint64, from, to uint32, now int64) Result {
	mac &= macMask
	if mac&groupBit != 0 {
		return Multicast
	}
	nowTick := now >> t.tickShift
	idx := t.home(mac)
	sh := t.shardOf(idx)
	want := liveBit | mac
	sh.mu.Lock()
	for i := idx; ; i = t.next(i) {
		s := &t.slots[i]
		k := s.key.Load()
		if k == 0 {
			break
		}
		if k != want {
			continue
		}
		v := s.val.Load()
		r := Conflict
		switch old := valPort(v); {
		case old == from && from != to:
			if r = t.move(to, from); r == Moved {
				s.val.Store(pack(to, nowTick))
			}
		case old == to || t.aged(v, nowTick):
			r = t.update(s, to, nowTick)
		}
		sh.mu.Unlock()
		return r
	}
	sh.mu.Unlock()
	return t.Learn(mac, to, now)
}
