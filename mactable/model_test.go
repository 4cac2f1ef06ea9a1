package mactable

import (
	"fmt"
	"sort"
	"testing"
	"time"
)

// model is the table's specification as a plain map: what Learn returns,
// what Lookup and Walk report, and the counts, including when Learn
// reclaims aged entries. Hash placement, shards and probing are absent.
type model struct {
	capacity    int
	limit       int
	shift       uint
	maxAge      int64 // ticks
	m           map[uint64]modelEntry
	ports       map[uint32]int
	lastReclaim int64
}

type modelEntry struct {
	port uint32
	tick int64
}

func newModel(cfg Config) *model {
	g := int64(1) << (bitsLen(uint64(cfg.MaxAge)/1024) - 1)
	if g > 1<<30 {
		g = 1 << 30
	}
	limit := cfg.PortLimit
	if limit == 0 {
		limit = cfg.Capacity
	}
	return &model{
		capacity:    cfg.Capacity,
		limit:       limit,
		shift:       uint(bitsLen(uint64(g)) - 1),
		maxAge:      (int64(cfg.MaxAge) + g - 1) / g,
		m:           map[uint64]modelEntry{},
		ports:       map[uint32]int{},
		lastReclaim: -1 << 63,
	}
}

func bitsLen(x uint64) int {
	n := 0
	for ; x != 0; x >>= 1 {
		n++
	}
	return n
}

func (m *model) isAged(e modelEntry, nowTick int64) bool { return nowTick-e.tick > m.maxAge }

func (m *model) learn(mac uint64, port uint32, now int64) Result {
	mac &= macMask
	if IsMulticastKey(mac) {
		return Multicast
	}
	nt := now >> m.shift
	r := m.learnOnce(mac, port, nt)
	if (r == TableFull || r == PortFull) && nt > m.lastReclaim {
		m.lastReclaim = nt
		m.expire(now)
		r = m.learnOnce(mac, port, nt)
	}
	return r
}

func (m *model) learnOnce(mac uint64, port uint32, nt int64) Result {
	if e, ok := m.m[mac]; ok {
		aged := m.isAged(e, nt)
		if e.port == port {
			if nt > e.tick {
				e.tick = nt
				m.m[mac] = e
			}
			if aged {
				return Learned
			}
			return Refreshed
		}
		if m.ports[port] >= m.limit {
			return PortFull
		}
		m.ports[e.port]--
		m.ports[port]++
		m.m[mac] = modelEntry{port, nt}
		if aged {
			return Learned
		}
		return Moved
	}
	if len(m.m) >= m.capacity {
		return TableFull
	}
	if m.ports[port] >= m.limit {
		return PortFull
	}
	m.ports[port]++
	m.m[mac] = modelEntry{port, nt}
	return Learned
}

func (m *model) lookup(mac uint64, now int64) (uint32, bool) {
	e, ok := m.m[mac&macMask]
	if !ok || m.isAged(e, now>>m.shift) {
		return 0, false
	}
	return e.port, true
}

func (m *model) expire(now int64) int {
	n := 0
	for mac, e := range m.m {
		if m.isAged(e, now>>m.shift) {
			delete(m.m, mac)
			m.ports[e.port]--
			n++
		}
	}
	return n
}

func (m *model) removePort(port uint32) int {
	n := 0
	for mac, e := range m.m {
		if e.port == port {
			delete(m.m, mac)
			n++
		}
	}
	m.ports[port] = 0
	return n
}

func (m *model) flush() int {
	n := len(m.m)
	clear(m.m)
	clear(m.ports)
	return n
}

func (m *model) walk(now int64) []Entry {
	nt := now >> m.shift
	var out []Entry
	for mac, e := range m.m {
		if !m.isAged(e, nt) {
			out = append(out, Entry{MAC: mac, Port: e.port, Age: time.Duration(max(nt-e.tick, 0)) << m.shift})
		}
	}
	sortEntries(out)
	return out
}

func sortEntries(es []Entry) {
	sort.Slice(es, func(i, j int) bool { return es[i].MAC < es[j].MAC })
}

func walkAll(t *Table, now int64) []Entry {
	var out []Entry
	t.Walk(now, func(e Entry) { out = append(out, e) })
	sortEntries(out)
	return out
}

// checkInvariants verifies the table's internal structure: every key is
// reachable from its home slot without crossing an empty slot, no key is
// held twice, and the shard, port and table counts match the slots.
func checkInvariants(t *Table) error {
	seen := map[uint64]bool{}
	ports := make([]int32, len(t.ports))
	var total int32
	for si := range t.shards {
		sh := &t.shards[si]
		base := uint64(si) << t.slotBits
		var n int32
		for i := base; i <= base|t.slotMask; i++ {
			k := t.slots[i].key.Load()
			if k == 0 {
				continue
			}
			if k&liveBit == 0 || k&^(liveBit|macMask) != 0 {
				return fmt.Errorf("slot %d holds malformed key %#x", i, k)
			}
			mac := k & macMask
			if seen[mac] {
				return fmt.Errorf("%s held twice", FormatKey(mac))
			}
			seen[mac] = true
			home := t.home(mac)
			if home>>t.slotBits != uint64(si) {
				return fmt.Errorf("%s in shard %d, hashes to shard %d", FormatKey(mac), si, home>>t.slotBits)
			}
			for j := home; j != i; j = t.next(j) {
				if t.slots[j].key.Load() == 0 {
					return fmt.Errorf("%s at slot %d unreachable from home %d: slot %d empty", FormatKey(mac), i, home, j)
				}
			}
			ports[valPort(t.slots[i].val.Load())]++
			n++
		}
		if n != sh.count {
			return fmt.Errorf("shard %d holds %d keys, counts %d", si, n, sh.count)
		}
		total += int32(n)
	}
	if total != t.count.Load() {
		return fmt.Errorf("table holds %d keys, counts %d", total, t.count.Load())
	}
	owners := make([]int32, len(t.owners))
	for p := range ports {
		if ports[p] != t.ports[p].Load() {
			return fmt.Errorf("port %d holds %d keys, counts %d", p, ports[p], t.ports[p].Load())
		}
		owners[t.portOwner[p].Load()] += ports[p]
	}
	for o := range owners {
		if owners[o] != t.owners[o].Load() {
			return fmt.Errorf("owner %d's ports hold %d keys, it counts %d", o, owners[o], t.owners[o].Load())
		}
	}
	return nil
}

// compare checks every observable of t against m at now for the MACs in
// universe, plus Walk and the counts.
func compare(t *Table, m *model, universe []uint64, now int64, maxPorts int) error {
	for _, mac := range universe {
		gp, gok := t.Lookup(mac, now)
		wp, wok := m.lookup(mac, now)
		if gok != wok || gp != wp {
			return fmt.Errorf("Lookup(%s) = %d,%v; model %d,%v", FormatKey(mac), gp, gok, wp, wok)
		}
	}
	if t.Len() != len(m.m) {
		return fmt.Errorf("Len = %d; model %d", t.Len(), len(m.m))
	}
	for p := range maxPorts {
		if t.PortLen(uint32(p)) != m.ports[uint32(p)] {
			return fmt.Errorf("PortLen(%d) = %d; model %d", p, t.PortLen(uint32(p)), m.ports[uint32(p)])
		}
	}
	got, want := walkAll(t, now), m.walk(now)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		return fmt.Errorf("Walk = %v\nmodel %v", got, want)
	}
	return checkInvariants(t)
}

// opRunner decodes a byte string into table operations, applies each to
// the table and the model and compares them. It is shared by the fuzz
// target and the long churn test.
type opRunner struct {
	t        *Table
	m        *model
	cfg      Config
	universe []uint64
	now      int64
	full     bool // compare everything after every op (slow, for fuzzing)
	// Each port's hints, as a switch keeps them: some of the ops go
	// through LearnHint and LookupHint, which must answer as Learn and
	// Lookup do whatever happened to the slots they remember.
	learnHints, lookupHints []Hint
}

func newOpRunner(cfg Config, universe []uint64, seed uint64) *opRunner {
	return &opRunner{
		t:        newTable(cfg, seed),
		m:        newModel(cfg),
		cfg:      cfg,
		universe: universe,
		now:      1 << 40,

		learnHints:  make([]Hint, cfg.MaxPorts),
		lookupHints: make([]Hint, cfg.MaxPorts),
	}
}

func (r *opRunner) step(op byte, macIdx int, b byte) error {
	mac := r.universe[macIdx%len(r.universe)]
	port := uint32(b) % uint32(r.cfg.MaxPorts)
	switch op % 16 {
	case 0, 1, 2, 3:
		if g, w := r.t.Learn(mac, port, r.now), r.m.learn(mac, port, r.now); g != w {
			return fmt.Errorf("Learn(%s, %d) = %v; model %v", FormatKey(mac), port, g, w)
		}
	case 4, 5:
		if g, w := r.t.LearnHint(mac, port, r.now, &r.learnHints[port]), r.m.learn(mac, port, r.now); g != w {
			return fmt.Errorf("LearnHint(%s, %d) = %v; model %v", FormatKey(mac), port, g, w)
		}
	case 6:
		// Secure mode's order (the engine's learnSecure): the port's own
		// live MAC refreshed through its hint; else looked up, and learned
		// only when no other port has it live.
		wp, wok := r.m.lookup(mac, r.now)
		if r.t.RefreshHint(mac, port, r.now, &r.learnHints[port]) {
			if !wok || wp != port {
				return fmt.Errorf("RefreshHint(%s, %d) refreshed it; model: port %d, live %v", FormatKey(mac), port, wp, wok)
			}
			if w := r.m.learn(mac, port, r.now); w != Refreshed {
				return fmt.Errorf("RefreshHint(%s, %d) refreshed it; model's Learn: %v", FormatKey(mac), port, w)
			}
			break
		}
		if gp, gok := r.t.Lookup(mac, r.now); gok != wok || gp != wp {
			return fmt.Errorf("Lookup(%s) = %d,%v; model %d,%v", FormatKey(mac), gp, gok, wp, wok)
		}
		if wok && wp != port {
			break // live on another port: not taken over
		}
		if g, w := r.t.LearnHint(mac, port, r.now, &r.learnHints[port]), r.m.learn(mac, port, r.now); g != w {
			return fmt.Errorf("LearnHint(%s, %d) = %v; model %v", FormatKey(mac), port, g, w)
		}
	case 7:
		gp, gok := r.t.Lookup(mac, r.now)
		wp, wok := r.m.lookup(mac, r.now)
		if gok != wok || gp != wp {
			return fmt.Errorf("Lookup(%s) = %d,%v; model %d,%v", FormatKey(mac), gp, gok, wp, wok)
		}
	case 8:
		gp, gok := r.t.LookupHint(mac, r.now, &r.lookupHints[port])
		wp, wok := r.m.lookup(mac, r.now)
		if gok != wok || gp != wp {
			return fmt.Errorf("LookupHint(%s) = %d,%v; model %d,%v", FormatKey(mac), gp, gok, wp, wok)
		}
	case 9:
		if g, w := r.t.RemovePort(port), r.m.removePort(port); g != w {
			return fmt.Errorf("RemovePort(%d) = %d; model %d", port, g, w)
		}
	case 10:
		if g, w := r.t.Expire(r.now), r.m.expire(r.now); g != w {
			return fmt.Errorf("Expire = %d; model %d", g, w)
		}
	case 11:
		if macIdx%4 == 0 {
			if g, w := r.t.Flush(), r.m.flush(); g != w {
				return fmt.Errorf("Flush = %d; model %d", g, w)
			}
		}
	case 12, 13, 14:
		// Small steps, mostly within a tick or a few.
		r.now += int64(b) * int64(r.t.Granularity()) / 64
	case 15:
		// Large steps cross MaxAge.
		r.now += int64(b) * int64(r.cfg.MaxAge) / 128
	}
	if r.full {
		return compare(r.t, r.m, r.universe, r.now, r.cfg.MaxPorts)
	}
	return nil
}

func (r *opRunner) run(data []byte) error {
	for i := 0; i+3 <= len(data); i += 3 {
		if err := r.step(data[i], int(data[i+1]), data[i+2]); err != nil {
			return fmt.Errorf("op %d: %w", i/3, err)
		}
	}
	return compare(r.t, r.m, r.universe, r.now, r.cfg.MaxPorts)
}

// testUniverse is n unicast MACs spread over the key space plus a couple
// of group addresses and the all-zero MAC (a valid key that must not look
// like an empty slot).
func testUniverse(n int) []uint64 {
	u := []uint64{0, 0xffffffffffff, 0x01005e000001}
	x := uint64(0x0200_0000_0001)
	for len(u) < n {
		x = x*6364136223846793005 + 1442695040888963407
		u = append(u, (x>>16)&macMask&^groupBit)
	}
	return u
}

var fuzzCfg = Config{Capacity: 12, PortLimit: 5, MaxAge: time.Second, MaxPorts: 4}

func FuzzTable(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 2, 0, 0, 1, 1, 7, 1, 0})
	f.Add([]byte{0, 1, 0, 0, 1, 1, 15, 0, 200, 0, 1, 2, 10, 0, 0})
	seed := make([]byte, 0, 3*400)
	x := uint32(7)
	for len(seed) < cap(seed) {
		x = x*1103515245 + 12345
		seed = append(seed, byte(x>>16))
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := newOpRunner(fuzzCfg, testUniverse(24), 1)
		r.full = true
		if err := r.run(data); err != nil {
			t.Fatal(err)
		}
	})
}
