package mactable

import "testing"

// The event loop learns and looks up a MAC for every frame; none of the
// per-frame operations may allocate. Expire and RemovePort run on the same
// loop (every second, on every disconnect), so they are held to it too.
func TestZeroAllocs(t *testing.T) {
	tb := mustNew(t, defCfg)
	g := int64(tb.Granularity())
	macs := make([]uint64, 1000)
	for i := range macs {
		macs[i] = 0x020000000000 + uint64(i)*7919
		tb.Learn(macs[i], uint32(i%8), 0)
	}
	now, i := int64(0), 0
	check := func(name string, f func()) {
		t.Helper()
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocations per run", name, n)
		}
	}
	check("Lookup hit", func() {
		if _, ok := tb.Lookup(macs[i%len(macs)], now); !ok {
			t.Fatal("miss")
		}
		i++
	})
	check("Lookup miss", func() {
		if _, ok := tb.Lookup(0x030000000000+uint64(i), now); ok {
			t.Fatal("hit")
		}
		i++
	})
	check("Learn refresh, same tick", func() {
		if r := tb.Learn(macs[i%len(macs)], uint32(i%len(macs)%8), now); r != Refreshed {
			t.Fatal(r)
		}
		i++
	})
	check("Learn refresh, new tick", func() {
		now += g
		if r := tb.Learn(macs[i%len(macs)], uint32(i%len(macs)%8), now); r != Refreshed {
			t.Fatal(r)
		}
		i++
	})
	check("Learn move", func() {
		tb.Learn(macs[0], uint32(i%2), now)
		i++
	})
	check("Learn new and RemovePort", func() {
		for j := range 20 {
			if r := tb.Learn(0x040000000000+uint64(i*20+j), 9, now); r != Learned {
				t.Fatal(r)
			}
		}
		if tb.RemovePort(9) != 20 {
			t.Fatal("RemovePort")
		}
		i++
	})
	check("Expire", func() { tb.Expire(now) })
}
