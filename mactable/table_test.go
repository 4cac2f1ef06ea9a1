package mactable

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var defCfg = Config{Capacity: 8192, PortLimit: 256, MaxAge: 300 * time.Second, MaxPorts: 64}

func mustNew(t testing.TB, cfg Config) *Table {
	t.Helper()
	tb, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestKey(t *testing.T) {
	b := []byte{0xaa, 0xbb, 0xcc, 0x0d, 0xee, 0xf0, 0x99}
	k := Key(b)
	if k != 0xaabbcc0deef0 {
		t.Fatalf("Key = %#x", k)
	}
	if s := FormatKey(k); s != "aa:bb:cc:0d:ee:f0" {
		t.Fatalf("FormatKey = %q", s)
	}
	if s := FormatKey(0); s != "00:00:00:00:00:00" {
		t.Fatalf("FormatKey(0) = %q", s)
	}
	for _, c := range []struct {
		mac   string
		group bool
	}{
		{"ff:ff:ff:ff:ff:ff", true},
		{"01:00:5e:00:00:01", true},
		{"33:33:00:00:00:01", true},
		{"01:80:c2:00:00:00", true},
		{"02:00:00:00:00:01", false},
		{"00:00:00:00:00:00", false},
		{"fe:ff:ff:ff:ff:ff", false},
	} {
		var b [6]byte
		for i, part := range strings.Split(c.mac, ":") {
			var v byte
			for _, ch := range part {
				v = v<<4 | byte(strings.IndexRune("0123456789abcdef", ch))
			}
			b[i] = v
		}
		k := Key(b[:])
		if FormatKey(k) != c.mac {
			t.Errorf("FormatKey(Key(%s)) = %s", c.mac, FormatKey(k))
		}
		if IsMulticastKey(k) != c.group {
			t.Errorf("IsMulticastKey(%s) = %v", c.mac, !c.group)
		}
	}
}

func TestResultString(t *testing.T) {
	want := []string{"refreshed", "learned", "moved", "table full", "port full", "multicast", "owner full", "conflict", "Result(8)"}
	for i, w := range want {
		if s := Result(i).String(); s != w {
			t.Errorf("Result(%d) = %q, want %q", i, s, w)
		}
	}
}

func TestNewValidation(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		name string
	}{
		{Config{Capacity: 0, MaxAge: time.Minute, MaxPorts: 4}, "--mac-max"},
		{Config{Capacity: MaxCapacity + 1, MaxAge: time.Minute, MaxPorts: 4}, "--mac-max"},
		{Config{Capacity: 10, PortLimit: -1, MaxAge: time.Minute, MaxPorts: 4}, "--port-macs"},
		{Config{Capacity: 10, PortLimit: 11, MaxAge: time.Minute, MaxPorts: 4}, "--port-macs"},
		{Config{Capacity: 10, HostLimit: -1, MaxAge: time.Minute, MaxPorts: 4}, "--remote-macs"},
		{Config{Capacity: 10, HostLimit: 11, MaxAge: time.Minute, MaxPorts: 4}, "--remote-macs"},
		{Config{Capacity: 10, MaxAge: time.Millisecond, MaxPorts: 4}, "--mac-age"},
		{Config{Capacity: 10, MaxAge: time.Minute, MaxPorts: 0}, "MaxPorts"},
		{Config{Capacity: 10, MaxAge: time.Minute, MaxPorts: MaxMaxPorts + 1}, "MaxPorts"},
	} {
		_, err := New(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.name) {
			t.Errorf("New(%+v) = %v, want an error naming %s", c.cfg, err, c.name)
		}
	}
	for _, cfg := range []Config{
		{Capacity: 1, MaxAge: time.Second, MaxPorts: 1},
		defCfg,
		{Capacity: 100, PortLimit: 100, MaxAge: 24 * time.Hour, MaxPorts: MaxMaxPorts},
	} {
		if _, err := New(cfg); err != nil {
			t.Errorf("New(%+v): %v", cfg, err)
		}
	}
}

func TestGeometry(t *testing.T) {
	for _, c := range []struct {
		capacity, shards int
	}{{1, 1}, {100, 1}, {512, 1}, {2048, 4}, {8192, 16}, {MaxCapacity, maxShards}} {
		tb := mustNew(t, Config{Capacity: c.capacity, MaxAge: time.Minute, MaxPorts: 1})
		if len(tb.shards) != c.shards {
			t.Errorf("Capacity %d: %d shards, want %d", c.capacity, len(tb.shards), c.shards)
		}
		if len(tb.slots) < 2*c.capacity {
			t.Errorf("Capacity %d: %d slots, load factor above 0.5", c.capacity, len(tb.slots))
		}
		if int(tb.shardMax)*len(tb.shards) < c.capacity*3/2 {
			t.Errorf("Capacity %d: shard limit %d too tight", c.capacity, tb.shardMax)
		}
	}
	g := mustNew(t, defCfg).Granularity()
	if g > defCfg.MaxAge/1024 || g <= defCfg.MaxAge/2048 {
		t.Errorf("Granularity %v for MaxAge %v", g, defCfg.MaxAge)
	}
}

const sec = int64(time.Second)

func TestLearnLookupMoveRefresh(t *testing.T) {
	tb := mustNew(t, defCfg)
	a, b := uint64(0x020000000001), uint64(0x020000000002)
	now := 1000 * sec
	if _, ok := tb.Lookup(a, now); ok {
		t.Fatal("Lookup on an empty table found an entry")
	}
	if r := tb.Learn(a, 3, now); r != Learned {
		t.Fatalf("first Learn = %v", r)
	}
	if r := tb.Learn(b, 3, now); r != Learned {
		t.Fatalf("Learn b = %v", r)
	}
	if p, ok := tb.Lookup(a, now); !ok || p != 3 {
		t.Fatalf("Lookup = %d,%v", p, ok)
	}
	if r := tb.Learn(a, 3, now+sec); r != Refreshed {
		t.Fatalf("same port Learn = %v", r)
	}
	if r := tb.Learn(a, 7, now+2*sec); r != Moved {
		t.Fatalf("other port Learn = %v", r)
	}
	if p, ok := tb.Lookup(a, now+2*sec); !ok || p != 7 {
		t.Fatalf("Lookup after move = %d,%v", p, ok)
	}
	if tb.Len() != 2 || tb.PortLen(3) != 1 || tb.PortLen(7) != 1 {
		t.Fatalf("Len %d PortLen(3) %d PortLen(7) %d", tb.Len(), tb.PortLen(3), tb.PortLen(7))
	}
	if r := tb.Learn(0xffffffffffff, 1, now); r != Multicast {
		t.Fatalf("broadcast Learn = %v", r)
	}
	if r := tb.Learn(0x01005e0000fb, 1, now); r != Multicast {
		t.Fatalf("multicast Learn = %v", r)
	}
	if _, ok := tb.Lookup(0xffffffffffff, now); ok || tb.Len() != 2 {
		t.Fatal("a group address was learned")
	}
	// Bits above the MAC are ignored rather than corrupting the key word.
	if p, ok := tb.Lookup(a|0xffff<<48, now+2*sec); !ok || p != 7 {
		t.Fatalf("Lookup with high bits set = %d,%v", p, ok)
	}
	if tb.PortLen(1000) != 0 || tb.RemovePort(1000) != 0 {
		t.Fatal("out-of-range port reported entries")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Learn on a port beyond MaxPorts did not panic")
			}
		}()
		tb.Learn(a, uint32(defCfg.MaxPorts), now)
	}()
}

func TestZeroMAC(t *testing.T) {
	tb := mustNew(t, Config{Capacity: 4, MaxAge: time.Second, MaxPorts: 2})
	if r := tb.Learn(0, 1, 0); r != Learned {
		t.Fatalf("Learn(00:00:00:00:00:00) = %v", r)
	}
	if p, ok := tb.Lookup(0, 0); !ok || p != 1 {
		t.Fatalf("Lookup(0) = %d,%v", p, ok)
	}
	if tb.RemovePort(1) != 1 || tb.Len() != 0 {
		t.Fatal("RemovePort did not remove the zero MAC")
	}
}

// The refresh path must not write the value word while the stored tick is
// current: the event loop refreshes every source MAC of every frame.
func TestRefreshStoresOncePerTick(t *testing.T) {
	tb := mustNew(t, defCfg)
	mac := uint64(0x02aabbccddee)
	g := int64(tb.Granularity())
	base := 5000 * g
	tb.Learn(mac, 1, base)
	s := &tb.slots[slotOf(t, tb, mac)]
	v0 := s.val.Load()
	if r := tb.Learn(mac, 1, base+g-1); r != Refreshed {
		t.Fatalf("Learn = %v", r)
	}
	if s.val.Load() != v0 {
		t.Fatal("refresh within the same tick stored a new value")
	}
	if r := tb.Learn(mac, 1, base+g); r != Refreshed {
		t.Fatalf("Learn = %v", r)
	}
	if v := s.val.Load(); v == v0 || valPort(v) != 1 {
		t.Fatalf("refresh in the next tick stored %#x (was %#x)", v, v0)
	}
	// A writer whose clock lags a little must not move the time back.
	v1 := s.val.Load()
	if r := tb.Learn(mac, 1, base); r != Refreshed || s.val.Load() != v1 {
		t.Fatalf("lagging refresh: %v, value %#x, was %#x", r, s.val.Load(), v1)
	}
}

func slotOf(t *testing.T, tb *Table, mac uint64) uint64 {
	t.Helper()
	for i := range tb.slots {
		if tb.slots[i].key.Load() == liveBit|mac {
			return uint64(i)
		}
	}
	t.Fatalf("%s not in any slot", FormatKey(mac))
	return 0
}

func TestAging(t *testing.T) {
	tb := mustNew(t, defCfg)
	g := int64(tb.Granularity())
	maxAge := int64(defCfg.MaxAge)
	seen := 777 * sec
	a, b := uint64(0x020000000001), uint64(0x020000000002)
	tb.Learn(a, 1, seen)
	tb.Learn(b, 2, seen+maxAge/2)
	// Never before MaxAge...
	if _, ok := tb.Lookup(a, seen+maxAge); !ok {
		t.Fatal("entry aged out at exactly MaxAge")
	}
	if n := tb.Expire(seen + maxAge); n != 0 {
		t.Fatalf("Expire at MaxAge removed %d", n)
	}
	// ...always by MaxAge plus two ticks.
	late := seen + maxAge + 2*g
	if _, ok := tb.Lookup(a, late); ok {
		t.Fatal("aged entry returned by Lookup")
	}
	if p, ok := tb.Lookup(b, late); !ok || p != 2 {
		t.Fatal("younger entry lost")
	}
	es := walkAll(tb, late)
	if len(es) != 1 || es[0].MAC != b || es[0].Port != 2 {
		t.Fatalf("Walk = %v", es)
	}
	if age := es[0].Age; age < time.Duration(maxAge/2) || age > time.Duration(maxAge/2+3*g) {
		t.Fatalf("Walk Age = %v", age)
	}
	// Aged entries count until reclaimed.
	if tb.Len() != 2 || tb.PortLen(1) != 1 {
		t.Fatalf("Len %d PortLen(1) %d before Expire", tb.Len(), tb.PortLen(1))
	}
	if n := tb.Expire(late); n != 1 {
		t.Fatalf("Expire removed %d, want 1", n)
	}
	if tb.Len() != 1 || tb.PortLen(1) != 0 || tb.PortLen(2) != 1 {
		t.Fatalf("after Expire: Len %d PortLen(1) %d PortLen(2) %d", tb.Len(), tb.PortLen(1), tb.PortLen(2))
	}
	// Refreshing keeps an entry alive indefinitely.
	now := late
	for range 10 {
		now += maxAge / 4
		if r := tb.Learn(b, 2, now); r != Refreshed {
			t.Fatalf("refresh = %v", r)
		}
	}
	if _, ok := tb.Lookup(b, now+maxAge); !ok {
		t.Fatal("refreshed entry aged out")
	}
	// An aged entry seen again is learned afresh, on its port or another.
	tb.Learn(a, 1, now)
	if r := tb.Learn(a, 1, now+maxAge+2*g); r != Learned {
		t.Fatalf("relearn after aging, same port = %v", r)
	}
	if r := tb.Learn(a, 3, now+2*maxAge+4*g); r != Learned {
		t.Fatalf("relearn after aging, other port = %v", r)
	}
	if tb.PortLen(1) != 0 || tb.PortLen(3) != 1 {
		t.Fatalf("PortLen(1) %d PortLen(3) %d", tb.PortLen(1), tb.PortLen(3))
	}
}

func TestRemovePort(t *testing.T) {
	tb := mustNew(t, Config{Capacity: 2048, MaxAge: time.Minute, MaxPorts: 8})
	rng := rand.New(rand.NewPCG(1, 2))
	owner := map[uint64]uint32{}
	for len(owner) < 2000 {
		mac := rng.Uint64() & macMask &^ groupBit
		p := uint32(rng.IntN(8))
		if tb.Learn(mac, p, 0) == Learned {
			owner[mac] = p
		}
	}
	want := 0
	for _, p := range owner {
		if p == 5 {
			want++
		}
	}
	if n := tb.RemovePort(5); n != want {
		t.Fatalf("RemovePort removed %d, port held %d", n, want)
	}
	if tb.PortLen(5) != 0 || tb.Len() != 2000-want {
		t.Fatalf("PortLen(5) %d, Len %d", tb.PortLen(5), tb.Len())
	}
	for mac, p := range owner {
		got, ok := tb.Lookup(mac, 0)
		if p == 5 && ok {
			t.Fatalf("%s of the removed port still found", FormatKey(mac))
		}
		if p != 5 && (!ok || got != p) {
			t.Fatalf("%s lost: %d,%v, want %d", FormatKey(mac), got, ok, p)
		}
	}
	if err := checkInvariants(tb); err != nil {
		t.Fatal(err)
	}
	if tb.RemovePort(5) != 0 {
		t.Fatal("second RemovePort removed entries")
	}
	if n := tb.Flush(); n != 2000-want || tb.Len() != 0 {
		t.Fatalf("Flush removed %d, Len %d", n, tb.Len())
	}
	for p := range uint32(8) {
		if tb.PortLen(p) != 0 {
			t.Fatalf("PortLen(%d) = %d after Flush", p, tb.PortLen(p))
		}
	}
	if err := checkInvariants(tb); err != nil {
		t.Fatal(err)
	}
}

// The defect of the original: forged source MACs from one client pushed
// everyone else's entries out of the table.
func TestForgedMACFloodDoesNotDisplace(t *testing.T) {
	cfg := Config{Capacity: 1024, PortLimit: 64, MaxAge: time.Minute, MaxPorts: 32}
	tb := mustNew(t, cfg)
	victims := []uint64{0x020000000a01, 0x020000000a02, 0x020000000a03}
	for _, v := range victims {
		tb.Learn(v, 1, 0)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	forge := func() uint64 { return rng.Uint64() & macMask &^ groupBit }

	learned, full := 0, 0
	for range 10 * cfg.PortLimit {
		switch r := tb.Learn(forge(), 0, sec); r {
		case Learned:
			learned++
		case PortFull:
			full++
		default:
			t.Fatalf("forged Learn = %v", r)
		}
	}
	if learned != cfg.PortLimit || tb.PortLen(0) != cfg.PortLimit {
		t.Fatalf("attacker learned %d (PortLen %d), limit %d", learned, tb.PortLen(0), cfg.PortLimit)
	}
	for _, v := range victims {
		if p, ok := tb.Lookup(v, sec); !ok || p != 1 {
			t.Fatalf("victim %s displaced", FormatKey(v))
		}
	}
	if r := tb.Learn(0x020000000a04, 1, sec); r != Learned {
		t.Fatalf("victim port cannot learn: %v", r)
	}
	// The attacker cannot take a victim's MAC into its full port either.
	if r := tb.Learn(victims[0], 0, sec); r != PortFull {
		t.Fatalf("move into a full port = %v", r)
	}
	if p, _ := tb.Lookup(victims[0], sec); p != 1 {
		t.Fatal("refused move still moved the entry")
	}

	// Many attacking ports together fill the table; still nobody is evicted.
	for p := uint32(2); p < 32; p++ {
		for range 10 * cfg.PortLimit {
			if r := tb.Learn(forge(), p, sec); r != Learned && r != PortFull && r != TableFull {
				t.Fatalf("Learn = %v", r)
			}
		}
	}
	if tb.Len() != cfg.Capacity {
		t.Fatalf("Len %d, want a full table of %d", tb.Len(), cfg.Capacity)
	}
	if r := tb.Learn(0x020000000a05, 1, sec); r != TableFull {
		t.Fatalf("Learn on a full table = %v", r)
	}
	for _, v := range append(victims, 0x020000000a04) {
		if p, ok := tb.Lookup(v, sec); !ok || p != 1 {
			t.Fatalf("victim %s displaced by a full table", FormatKey(v))
		}
		if r := tb.Learn(v, 1, 2*sec); r != Refreshed {
			t.Fatalf("victim refresh on a full table = %v", r)
		}
	}
	// Moves need no free table room: the entry count does not change.
	if r := tb.Learn(victims[1], 31, 2*sec); r != Moved && r != PortFull {
		t.Fatalf("move on a full table = %v", r)
	}
	if err := checkInvariants(tb); err != nil {
		t.Fatal(err)
	}
}

func TestReclaimAged(t *testing.T) {
	cfg := Config{Capacity: 100, PortLimit: 40, MaxAge: 10 * time.Second, MaxPorts: 4}
	tb := mustNew(t, cfg)
	g := int64(tb.Granularity())
	for i := range 100 {
		if r := tb.Learn(0x020000000000+uint64(i), uint32(i%3), 0); r != Learned {
			t.Fatalf("fill %d: %v", i, r)
		}
	}
	if r := tb.Learn(0x021111111111, 3, sec); r != TableFull {
		t.Fatalf("Learn on a full table = %v", r)
	}
	// Keep one entry alive; let the rest age.
	tb.Learn(0x020000000000, 0, 9*sec)
	late := int64(cfg.MaxAge) + 2*g
	if r := tb.Learn(0x021111111111, 3, late); r != Learned {
		t.Fatalf("Learn on a table full of aged entries = %v", r)
	}
	if tb.Len() != 2 {
		t.Fatalf("Len %d after reclaim, want 2", tb.Len())
	}
	if p, ok := tb.Lookup(0x020000000000, late); !ok || p != 0 {
		t.Fatal("the live entry was reclaimed")
	}

	// A port full of its own aged entries learns again.
	for i := range 39 {
		tb.Learn(0x023000000000+uint64(i), 3, late)
	}
	if tb.PortLen(3) != 40 {
		t.Fatalf("PortLen(3) = %d", tb.PortLen(3))
	}
	if r := tb.Learn(0x024000000000, 3, late+g); r != PortFull {
		t.Fatalf("Learn on a full port = %v", r)
	}
	later := late + int64(cfg.MaxAge) + 2*g
	if r := tb.Learn(0x024000000000, 3, later); r != Learned {
		t.Fatalf("Learn on a port full of aged entries = %v", r)
	}
	if tb.PortLen(3) != 1 {
		t.Fatalf("PortLen(3) = %d after reclaim", tb.PortLen(3))
	}
	if err := checkInvariants(tb); err != nil {
		t.Fatal(err)
	}
}

// A flood of new MACs against a full, unaged table sweeps at most once per
// tick, not once per frame.
func TestReclaimRateLimited(t *testing.T) {
	tb := mustNew(t, Config{Capacity: 16, MaxAge: time.Minute, MaxPorts: 2})
	for i := range 16 {
		tb.Learn(0x020000000000+uint64(i), 0, 0)
	}
	g := int64(tb.Granularity())
	tb.Learn(0x021000000000, 1, 5*g)
	if n := tb.sweeps.Load(); n != 1 {
		t.Fatalf("%d sweeps after a full-table Learn", n)
	}
	for i := range 100 {
		if r := tb.Learn(0x021000000001+uint64(i), 1, 5*g+g/2); r != TableFull {
			t.Fatalf("Learn = %v", r)
		}
	}
	if n := tb.sweeps.Load(); n != 1 {
		t.Fatalf("%d sweeps in one tick", n)
	}
	tb.Learn(0x022000000000, 1, 6*g)
	if n := tb.sweeps.Load(); n != 2 {
		t.Fatalf("%d sweeps after the next tick's Learn, want 2", n)
	}
}

// Long random churn against the model: a small table with heavy deletion
// exercises backward shift at every position including wrap-around, a
// larger one exercises several shards.
func TestChurnAgainstModel(t *testing.T) {
	iters := 200000
	if testing.Short() || raceEnabled {
		iters = 20000
	}
	for _, c := range []struct {
		name     string
		cfg      Config
		universe int
		calm     int
	}{
		{"one-shard", Config{Capacity: 24, PortLimit: 9, MaxAge: time.Second, MaxPorts: 5}, 40, 1},
		{"tiny", Config{Capacity: 3, PortLimit: 2, MaxAge: time.Second, MaxPorts: 3}, 8, 1},
		{"sharded", Config{Capacity: 2048, PortLimit: 360, MaxAge: 30 * time.Second, MaxPorts: 6}, 4000, 300},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newOpRunner(c.cfg, testUniverse(c.universe), 42)
			rng := rand.New(rand.NewPCG(5, 6))
			for i := range iters {
				op, arg := byte(rng.Uint32()), byte(rng.Uint32())
				// Fewer port removals, flushes and big time steps in the big table,
				// so that it fills up between them.
				if (op%16 == 9 || op%16 == 11 || op%16 == 15) && rng.IntN(c.calm) != 0 {
					op = 0
				}
				if err := r.step(op, rng.IntN(len(r.universe)), arg); err != nil {
					t.Fatalf("iteration %d: %v", i, err)
				}
				if i%1000 == 0 {
					if err := compare(r.t, r.m, r.universe, r.now, c.cfg.MaxPorts); err != nil {
						t.Fatalf("iteration %d: %v", i, err)
					}
				}
			}
			if err := compare(r.t, r.m, r.universe, r.now, c.cfg.MaxPorts); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// The ports of one owner share OwnerLimit: many ports of one user cannot
// fill the table, other owners keep learning, and moves between the
// owner's own ports or entries that go away give the room back.
func TestOwnerLimitSpansPorts(t *testing.T) {
	tb := mustNew(t, Config{Capacity: 100, PortLimit: 10, OwnerLimit: 15, MaxAge: time.Minute, MaxPorts: 8})
	const attacker, victim = 1, 2
	for port := uint32(1); port <= 3; port++ {
		tb.SetOwner(port, attacker)
	}
	tb.SetOwner(4, victim)
	learned := 0
	for port := uint32(1); port <= 3; port++ {
		for i := 0; i < 10; i++ {
			if r := tb.Learn(uint64(0x020000000000+int(port)*100+i), port, 0); r == Learned {
				learned++
			} else if r != OwnerFull {
				t.Fatalf("port %d MAC %d: %v, want learned or owner full", port, i, r)
			}
		}
	}
	if learned != 15 || tb.OwnerLen(attacker) != 15 {
		t.Fatalf("the attacker's three ports learned %d (owner holds %d), want the owner limit of 15", learned, tb.OwnerLen(attacker))
	}
	if r := tb.Learn(uint64(0x020000000000+4000), 4, 0); r != Learned {
		t.Fatalf("the victim's MAC was not learned: %v", r)
	}
	// Owner 0 (the TAP's) has no owner limit.
	for i := 0; i < 20; i++ {
		if r := tb.Learn(uint64(0x020000000000+5000+i), 0, 0); r != Learned && r != PortFull {
			t.Fatalf("owner 0: %v", r)
		}
	}
	// A move between two of the attacker's ports keeps its count; a move to
	// another owner's port is counted there.
	if r := tb.Learn(uint64(0x020000000000+100), 3, 0); r != PortFull && r != Moved {
		t.Fatalf("move within the owner: %v", r)
	}
	if got := tb.OwnerLen(attacker); got != 15 {
		t.Fatalf("a move between the attacker's ports changed its count to %d", got)
	}
	if r := tb.Learn(uint64(0x020000000000+101), 4, 0); r != Moved {
		t.Fatalf("move to the victim: %v", r)
	}
	if tb.OwnerLen(attacker) != 14 || tb.OwnerLen(victim) != 2 {
		t.Fatalf("after a move across owners: attacker %d victim %d, want 14 and 2", tb.OwnerLen(attacker), tb.OwnerLen(victim))
	}
	// Closing a port gives its entries back to the owner.
	n := tb.RemovePort(1)
	if tb.OwnerLen(attacker) != 14-n {
		t.Fatalf("RemovePort(1) removed %d but the owner holds %d", n, tb.OwnerLen(attacker))
	}
	tb.Flush()
	for o := uint32(0); o < 8; o++ {
		if tb.OwnerLen(o) != 0 {
			t.Fatalf("owner %d holds %d after Flush", o, tb.OwnerLen(o))
		}
	}
}

// The host's port (the TAP) learns past PortLimit: a bridged LAN or other
// hosts behind it may hold any number of MACs.
func TestHostPortHasNoPortLimit(t *testing.T) {
	tb := mustNew(t, Config{Capacity: 100, PortLimit: 4, MaxAge: time.Minute, MaxPorts: 8})
	tb.SetHostPort(0)
	for i := 0; i < 50; i++ {
		if r := tb.Learn(uint64(0x020000000100+i), 0, 0); r != Learned {
			t.Fatalf("host port MAC %d: %v", i, r)
		}
	}
	for i := 0; i < 5; i++ {
		r := tb.Learn(uint64(0x020000000200+i), 1, 0)
		if (i < 4 && r != Learned) || (i == 4 && r != PortFull) {
			t.Fatalf("client port MAC %d: %v", i, r)
		}
	}
}

// The host's port holds at most HostLimit entries (--remote-macs), so
// whatever the underlay sends, the clients keep the rest of the table.
func TestHostLimitKeepsRoomForClients(t *testing.T) {
	tb := mustNew(t, Config{Capacity: 100, PortLimit: 80, HostLimit: 25, MaxAge: time.Minute, MaxPorts: 8})
	tb.SetHostPort(0)
	for i := 0; i < 1000; i++ {
		r := tb.Learn(uint64(0x020000010000+i), 0, 0)
		if (i < 25 && r != Learned) || (i >= 25 && r != PortFull) {
			t.Fatalf("host port MAC %d: %v", i, r)
		}
	}
	if n := tb.PortLen(0); n != 25 {
		t.Fatalf("host port holds %d entries, want 25", n)
	}
	for i := 0; i < 75; i++ {
		if r := tb.Learn(uint64(0x020000020000+i), uint32(1+i/40), 0); r != Learned {
			t.Fatalf("client MAC %d with the host port full: %v", i, r)
		}
	}
}

// Finding 4 of issue 15: a frame from the underlay whose source is a live
// client's MAC must not move that MAC to the host's port; clients still
// move MACs among themselves (a VM moving, in -U mode) and take MACs from
// the host's side, and an aged entry is anyone's.
func TestHostPortNeverTakesALiveMAC(t *testing.T) {
	tb := mustNew(t, Config{Capacity: 100, PortLimit: 10, MaxAge: time.Minute, MaxPorts: 8})
	tb.SetHostPort(0)
	const vm, remote = 0x020000000001, 0x020000000002
	sec := int64(time.Second)
	if r := tb.Learn(vm, 1, 0); r != Learned {
		t.Fatalf("client learns: %v", r)
	}
	for i := 0; i < 3; i++ {
		if r := tb.Learn(vm, 0, sec); r != Conflict {
			t.Fatalf("host port takes a live client's MAC: %v", r)
		}
	}
	if p, ok := tb.Lookup(vm, sec); !ok || p != 1 {
		t.Fatalf("after the host's tries the MAC is on port %d (%v), want 1", p, ok)
	}
	if n := tb.PortLen(0); n != 0 {
		t.Fatalf("host port counts %d entries after Conflict", n)
	}
	if r := tb.Learn(vm, 2, 2*sec); r != Moved {
		t.Fatalf("client to client move: %v", r)
	}
	if r := tb.Learn(vm, 0, 3*sec); r != Conflict {
		t.Fatalf("host port takes the moved MAC: %v", r)
	}
	if r := tb.Learn(remote, 0, 3*sec); r != Learned {
		t.Fatalf("host port learns a MAC of its own: %v", r)
	}
	if r := tb.Learn(remote, 3, 4*sec); r != Moved {
		t.Fatalf("client takes a MAC from the host's side: %v", r)
	}
	// Silent for longer than MaxAge: no longer live, the host may have it.
	late := 3*sec + int64(3*time.Minute)
	if r := tb.Learn(vm, 0, late); r != Learned {
		t.Fatalf("host port learns an aged client MAC: %v", r)
	}
	if p, ok := tb.Lookup(vm, late); !ok || p != 0 {
		t.Fatalf("aged MAC learned by the host is on port %d (%v)", p, ok)
	}
	if tb.PortLen(2) != 0 || tb.PortLen(0) != 1 {
		t.Fatalf("counts after the aged move: port 2 %d, host %d", tb.PortLen(2), tb.PortLen(0))
	}
}

// Take moves a live client's MAC to the host port, where Learn says
// Conflict (the engine's decision that a VM went to another host), and
// between clients; only from the port the caller decided on: a MAC another
// port took meanwhile stays there (Conflict).
func TestTakeMovesOnlyFromTheGivenPort(t *testing.T) {
	tb := mustNew(t, Config{Capacity: 100, PortLimit: 10, MaxAge: time.Minute, MaxPorts: 8})
	tb.SetHostPort(0)
	const vm, other = 0x020000000001, 0x020000000002
	if r := tb.Learn(vm, 1, 0); r != Learned {
		t.Fatalf("client learns: %v", r)
	}
	if r := tb.Take(vm, 2, 0, 1); r != Conflict {
		t.Fatalf("Take from a port that does not have it: %v, want %v", r, Conflict)
	}
	if p, ok := tb.Lookup(vm, 1); !ok || p != 1 {
		t.Fatalf("after a refused Take the MAC is on port %d (%v), want 1", p, ok)
	}
	if r := tb.Take(vm, 1, 0, 1); r != Moved {
		t.Fatalf("Take to the host port: %v, want %v", r, Moved)
	}
	if p, ok := tb.Lookup(vm, 1); !ok || p != 0 || tb.PortLen(1) != 0 || tb.PortLen(0) != 1 {
		t.Fatalf("after Take the MAC is on port %d (%v); counts client %d host %d", p, ok, tb.PortLen(1), tb.PortLen(0))
	}
	if r := tb.Take(vm, 1, 0, 2); r != Refreshed {
		t.Fatalf("Take where it is: %v, want %v", r, Refreshed)
	}
	if r := tb.Take(vm, 0, 3, 2); r != Moved {
		t.Fatalf("Take from the host port to a client: %v, want %v", r, Moved)
	}
	if p, ok := tb.Lookup(vm, 2); !ok || p != 3 || tb.PortLen(0) != 0 || tb.PortLen(3) != 1 {
		t.Fatalf("after Take the MAC is on port %d (%v); counts host %d client %d", p, ok, tb.PortLen(0), tb.PortLen(3))
	}
	if r := tb.Take(other, 1, 0, 2); r != Learned {
		t.Fatalf("Take of a new MAC: %v, want %v", r, Learned)
	}
	if r := tb.Take(0x010000000001, 1, 0, 2); r != Multicast {
		t.Fatalf("Take of a group address: %v", r)
	}
}
