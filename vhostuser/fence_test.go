package vhostuser

import (
	"fmt"
	"sync/atomic"
	"testing"
)

var sharedFenceWord uint32

// BenchmarkFenceParallel: the barrier each RX and TX batch pays, on as
// many goroutines as -cpu gives (one per loop, as with --workers), on a
// word of each caller's stack (fence) and, for comparison, on one word
// they all share, as fence was: there a barrier waits for the line to
// come from the other core. work is how much else each goroutine does
// between two barriers (a batch's worth of work stands between two in
// the switch, so the line has always gone to the other core by then);
// the figure is ns per barrier and its work, over all goroutines.
//
//	go test -run '^$' -bench BenchmarkFenceParallel -cpu 1,2 ./vhostuser/
func BenchmarkFenceParallel(b *testing.B) {
	shared := func() { atomic.AddUint32(&sharedFenceWord, 0) }
	for _, work := range []int{0, 256} {
		for _, c := range []struct {
			word  string
			fence func()
		}{{"stack", fence}, {"shared", shared}} {
			b.Run(fmt.Sprintf("work=%d/word=%s", work, c.word), func(b *testing.B) {
				b.RunParallel(func(pb *testing.PB) {
					var local [64]uint64 // the goroutine's own work, in its own cache
					for pb.Next() {
						for i := range work {
							local[i%64] += uint64(i)
						}
						c.fence()
					}
					fenceSink.Add(local[0])
				})
			})
		}
	}
}

var fenceSink atomic.Uint64
