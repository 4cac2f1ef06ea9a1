package ratelog

import (
	"fmt"
	"testing"
	"time"
)

// TestBucketNeverAboveBurst: however long a message was quiet, and
// whether its bucket was created before the quiet time or after it, a
// burst of it writes at most the burst at once. (TestRefillIsBounded
// creates the bucket after its quiet hour, where any refill is unseen.)
func TestBucketNeverAboveBurst(t *testing.T) {
	const burst = 3
	for _, quiet := range []time.Duration{0, 1500 * time.Millisecond, time.Minute, time.Hour, 1000 * time.Hour} {
		for _, used := range []int{0, 1, burst, 100} {
			t.Run(fmt.Sprintf("%d lines, then quiet for %v", used, quiet), func(t *testing.T) {
				l, buf, clock := newTestLogger(burst, time.Second)
				for i := 0; i < used; i++ {
					l.Info("m")
				}
				before := len(lines(buf))
				clock.t = clock.t.Add(quiet)
				for i := 0; i < 10*burst; i++ {
					l.Info("m")
				}
				if got := len(lines(buf)) - before; got > burst {
					t.Fatalf("a flood after %d lines and %v of quiet wrote %d lines at once, more than the burst of %d", used, quiet, got, burst)
				}
			})
		}
	}
}
