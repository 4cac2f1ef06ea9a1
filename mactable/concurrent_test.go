package mactable

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Each MAC of the universe is only ever learned on one of its four
// allowed ports, and the allowed sets of different MACs rarely overlap, so
// a reader that pairs a MAC with another entry's port (a torn read across
// a backward shift) almost surely reports a port the MAC never had.
type concUniverse struct {
	macs    []uint64
	allowed map[uint64][4]uint32
}

const concPorts = 1 << 12

func newConcUniverse(n int) *concUniverse {
	u := &concUniverse{allowed: map[uint64][4]uint32{}}
	rng := rand.New(rand.NewPCG(9, 9))
	for len(u.macs) < n {
		mac := rng.Uint64() & macMask &^ groupBit
		if _, dup := u.allowed[mac]; dup {
			continue
		}
		var ps [4]uint32
		for j := range ps {
			ps[j] = uint32(rng.IntN(concPorts))
		}
		u.macs = append(u.macs, mac)
		u.allowed[mac] = ps
	}
	return u
}

func (u *concUniverse) valid(mac uint64, port uint32) bool {
	ps, ok := u.allowed[mac]
	return ok && (ps[0] == port || ps[1] == port || ps[2] == port || ps[3] == port)
}

// writer churns the table: learns and moves MACs on their allowed ports,
// removes ports, expires and flushes, so deletions shift entries all the
// time under the readers.
func (u *concUniverse) writer(tb *Table, clock *atomic.Int64, seed uint64, iters int) {
	rng := rand.New(rand.NewPCG(seed, 1))
	g := int64(tb.Granularity())
	for range iters {
		now := clock.Add(g / 8)
		mac := u.macs[rng.IntN(len(u.macs))]
		switch x := rng.IntN(1000); {
		case x < 960:
			tb.Learn(mac, u.allowed[mac][rng.IntN(4)], now)
		case x < 990:
			tb.RemovePort(u.allowed[mac][rng.IntN(4)])
		case x < 998:
			clock.Add(int64(time.Second) / 4)
			tb.Expire(now)
		default:
			tb.Flush()
		}
	}
}

func TestConcurrentReaders(t *testing.T) {
	iters := 100000
	if testing.Short() {
		iters = 10000
	}
	u := newConcUniverse(3000)
	tb := mustNew(t, Config{Capacity: 1024, PortLimit: 64, MaxAge: time.Second, MaxPorts: concPorts})
	var clock atomic.Int64
	clock.Store(1 << 40)
	var done atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	var hits, walks atomic.Int64
	for r := range 3 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 2))
			for !done.Load() {
				now := clock.Load()
				for range 200 {
					mac := u.macs[rng.IntN(len(u.macs))]
					if p, ok := tb.Lookup(mac, now); ok {
						hits.Add(1)
						if !u.valid(mac, p) {
							report(fmt.Errorf("Lookup(%s) = port %d, never written", FormatKey(mac), p))
						}
					}
				}
			}
		})
	}
	wg.Go(func() {
		for !done.Load() {
			seen := map[uint64]bool{}
			tb.Walk(clock.Load(), func(e Entry) {
				if !u.valid(e.MAC, e.Port) {
					report(fmt.Errorf("Walk: %s on port %d, never written", FormatKey(e.MAC), e.Port))
				}
				if seen[e.MAC] {
					report(fmt.Errorf("Walk: %s reported twice", FormatKey(e.MAC)))
				}
				seen[e.MAC] = true
			})
			walks.Add(1)
		}
	})
	// Keep writing until the readers have overlapped it for a while, however
	// the scheduler ran them.
	for n := uint64(0); n < uint64(iters)/1000 || walks.Load() < 20; n++ {
		u.writer(tb, &clock, n, 1000)
	}
	done.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := checkInvariants(tb); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d reader hits, %d walks", hits.Load(), walks.Load())
	if hits.Load() == 0 {
		t.Fatal("Lookup never found an entry")
	}
}

// Several writers on shared MACs (moves between their ports, deletions in
// each other's shards) must keep the counts and limits exact.
func TestConcurrentWriters(t *testing.T) {
	iters := 100000
	if testing.Short() {
		iters = 10000
	}
	u := newConcUniverse(3000)
	cfg := Config{Capacity: 1024, PortLimit: 4, MaxAge: time.Second, MaxPorts: concPorts}
	tb := mustNew(t, cfg)
	var clock atomic.Int64
	clock.Store(1 << 40)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() { u.writer(tb, &clock, uint64(w), iters) })
	}
	wg.Wait()
	if err := checkInvariants(tb); err != nil {
		t.Fatal(err)
	}
	if tb.Len() > cfg.Capacity {
		t.Fatalf("Len %d above Capacity", tb.Len())
	}
	for p := range uint32(concPorts) {
		if tb.PortLen(p) > cfg.PortLimit {
			t.Fatalf("PortLen(%d) = %d above PortLimit", p, tb.PortLen(p))
		}
	}
	tb.Walk(clock.Load(), func(e Entry) {
		if !u.valid(e.MAC, e.Port) {
			t.Errorf("%s on port %d, never written", FormatKey(e.MAC), e.Port)
		}
	})
}

// TestShiftUnderReaders aims at what backward shift could do to readers
// without the sequence check: MACs that share one home slot, so each
// deletion of the chain's head shifts the others back one slot while
// readers probe the chain. A reader must neither pair a MAC with the port
// of the entry shifted into its slot nor miss a MAC that never left.
// Without Lookup's sequence check the first fails in every run; a miss
// needs the reader to fall behind by a whole shift step between two slot
// loads and shows up only now and then.
func TestShiftUnderReaders(t *testing.T) {
	iters := 200000
	if testing.Short() || raceEnabled {
		iters = 20000
	}
	cfg := Config{Capacity: 11, MaxAge: time.Hour, MaxPorts: 16}
	tb := newTable(cfg, 12345)
	// MAC i lives on port i. The first churn MACs are removed and learned
	// again, going to the chain's end; the rest stay and move forward.
	const churn, chainLen = 8, 11
	var chain []uint64
	want := tb.home(0x020000000000)
	for mac := uint64(0x020000000000); len(chain) < chainLen; mac++ {
		if tb.home(mac) == want {
			chain = append(chain, mac)
		}
	}
	for i, mac := range chain {
		tb.Learn(mac, uint32(i), 0)
	}
	var done atomic.Bool
	var torn, missed atomic.Int64
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Go(func() {
			for n := 0; !done.Load(); n++ {
				i := (n + r) % len(chain)
				p, ok := tb.Lookup(chain[i], 0)
				if ok && p != uint32(i) {
					torn.Add(1)
				}
				if !ok && i >= churn {
					missed.Add(1)
				}
			}
		})
	}
	for n := range iters {
		i := n % churn
		tb.RemovePort(uint32(i))
		tb.Learn(chain[i], uint32(i), 0)
	}
	done.Store(true)
	wg.Wait()
	if n := torn.Load(); n != 0 {
		t.Errorf("%d lookups returned another entry's port", n)
	}
	if n := missed.Load(); n != 0 {
		t.Errorf("%d lookups missed an entry that was never removed", n)
	}
	if err := checkInvariants(tb); err != nil {
		t.Fatal(err)
	}
}
