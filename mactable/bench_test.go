package mactable

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// The loops count b.N by hand: b.Loop costs about 3 ns per iteration on
// the project's machines, as much as what is being measured.
//
// The benchmarks use the daemon's defaults with half the table live
// (4096 MACs on 64 ports) and visit MACs in a shuffled order, so probes
// land on cold and warm slots alike. BenchmarkMapBaseline does the same
// with a plain map so the ratio shows side by side.

const benchLive = 4096

func benchMACs(n int, salt uint64) []uint64 {
	rng := rand.New(rand.NewPCG(salt, 77))
	macs := make([]uint64, n)
	for i := range macs {
		macs[i] = rng.Uint64() & macMask &^ groupBit
	}
	return macs
}

func benchTable(b *testing.B) (*Table, []uint64) {
	tb := mustNew(b, defCfg)
	macs := benchMACs(benchLive, 1)
	for i, mac := range macs {
		if r := tb.Learn(mac, uint32(i%64), 0); r != Learned {
			b.Fatal(r)
		}
	}
	return tb, macs
}

// BenchmarkLookupHit/hot cycles through 16 MACs, as a few busy flows
// would; /spread through all 4096, so most probes miss L1.
func BenchmarkLookupHit(b *testing.B) {
	tb, macs := benchTable(b)
	for _, c := range []struct {
		name string
		mask int
	}{{"hot", 15}, {"spread", benchLive - 1}} {
		b.Run(c.name, func(b *testing.B) {
			var sink uint32
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p, _ := tb.Lookup(macs[i&c.mask], 0)
				sink += p
			}
			_ = sink
		})
	}
}

func BenchmarkLookupMiss(b *testing.B) {
	tb, _ := benchTable(b)
	other := benchMACs(benchLive, 2)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := tb.Lookup(other[i&(benchLive-1)], 0); ok {
			b.Fatal("hit")
		}
	}
}

// BenchmarkLearnRefresh is the per-frame source learn of a known MAC.
// The clock advances one Granularity per 4096 frames, so a few refreshes
// store and most find the tick current.
func BenchmarkLearnRefresh(b *testing.B) {
	tb, macs := benchTable(b)
	g := int64(tb.Granularity())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r := tb.Learn(macs[i&(benchLive-1)], uint32(i&(benchLive-1)%64), int64(i/benchLive)*g); r != Refreshed {
			b.Fatal(r)
		}
	}
}

// BenchmarkLearnNewRemovePort is client churn: one port learns 256 new
// MACs (its limit), then disconnects. ns/op is per Learn, the RemovePort
// sweep amortised over them.
func BenchmarkLearnNewRemovePort(b *testing.B) {
	tb, _ := benchTable(b)
	fresh := benchMACs(1<<16, 3)
	const port, burst = 63, 256
	tb.RemovePort(port)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r := tb.Learn(fresh[i&(1<<16-1)], port, 0); r != Learned {
			b.Fatal(r)
		}
		if (i+1)%burst == 0 {
			tb.RemovePort(port)
		}
	}
}

func BenchmarkExpire(b *testing.B) {
	tb, _ := benchTable(b)
	b.ResetTimer()
	for range b.N {
		tb.Expire(int64(time.Second))
	}
}

func BenchmarkLookupParallel(b *testing.B) {
	tb, macs := benchTable(b)
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			tb.Lookup(macs[i&(benchLive-1)], 0)
		}
	})
}

func BenchmarkMapBaseline(b *testing.B) {
	m := map[uint64]uint32{}
	macs := benchMACs(benchLive, 1)
	for i, mac := range macs {
		m[mac] = uint32(i % 64)
	}
	other := benchMACs(benchLive, 2)
	for _, c := range []struct {
		name string
		mask int
	}{{"hit/hot", 15}, {"hit/spread", benchLive - 1}} {
		b.Run(c.name, func(b *testing.B) {
			var sink uint32
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				sink += m[macs[i&c.mask]]
			}
			_ = sink
		})
	}
	b.Run("miss", func(b *testing.B) {
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, ok := m[other[i&(benchLive-1)]]; ok {
				b.Fatal("hit")
			}
		}
	})
	b.Run("store", func(b *testing.B) {
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			m[macs[i&(benchLive-1)]] = uint32(i & 63)
		}
	})
}

// BenchmarkPortHints is one port's frames as a switch sees them: "plain"
// looks the destination up and learns the source as the engine did
// (Lookup, Learn), "hinted" with the port's hints (LookupHint,
// LearnHint). With flows=1 every frame is from one source to one
// destination, a busy flow; with flows=4096 each frame is from and to
// other MACs, a TAP's or a router's port, where hints only cost. The
// clock moves one Granularity per 4096 frames, as in
// BenchmarkLearnRefresh.
func BenchmarkPortHints(b *testing.B) {
	tb, macs := benchTable(b)
	g := int64(tb.Granularity())
	for _, flows := range []int{1, benchLive} {
		mask := flows - 1
		// Frame i: from macs[src(i)] on its port, to macs[dst(i)].
		src := func(i int) int { return 5 + i&mask }
		dst := func(i int) int { return (77 + 7*i*min(flows-1, 1)) & (benchLive - 1) }
		b.Run(fmt.Sprintf("flows=%d/plain", flows), func(b *testing.B) {
			var sink uint32
			for i := 0; i < b.N; i++ {
				now := int64(i/benchLive) * g
				p, _ := tb.Lookup(macs[dst(i)], now)
				sink += p
				s := src(i) & (benchLive - 1)
				if tb.Learn(macs[s], uint32(s%64), now) != Refreshed {
					b.Fatal("not refreshed")
				}
			}
			_ = sink
		})
		b.Run(fmt.Sprintf("flows=%d/hinted", flows), func(b *testing.B) {
			var srcHint, dstHint Hint
			var sink uint32
			for i := 0; i < b.N; i++ {
				now := int64(i/benchLive) * g
				p, _ := tb.LookupHint(macs[dst(i)], now, &dstHint)
				sink += p
				s := src(i) & (benchLive - 1)
				if tb.LearnHint(macs[s], uint32(s%64), now, &srcHint) != Refreshed {
					b.Fatal("not refreshed")
				}
			}
			_ = sink
		})
	}
}
