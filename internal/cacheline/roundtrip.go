// Package cacheline measures how long a cache line takes to go from one
// CPU to another and back. On a VM that is not a constant of the machine:
// it moves as the host places the vCPUs (on the 2-vCPU machine the
// benchmarks ran on, 40-200 ns in some minutes and 500-1100 ns in
// others), and whatever moves lines between the switch's core and its
// peers' (guest rings, frames handed between loops) costs with it, so the
// benchmarks report it beside their results.
package cacheline

import (
	"slices"
	"sync/atomic"
	"time"
)

// RoundTrip is the median of 25 rounds of 400 round trips of one line
// between the calling goroutine and another, both spinning on it (a
// round in which one of them was descheduled does not count). pin, if
// not nil, is called first on each side (0 here, 1 on the other), to put
// the two on the CPUs to measure between. Both sides spin: it needs
// GOMAXPROCS of 2 or more, or each trip waits for a preemption.
func RoundTrip(pin func(side int)) time.Duration {
	var ball struct {
		ping atomic.Int64
		_    [56]byte // ping and pong on lines of their own
		pong atomic.Int64
	}
	const rounds, trips = 25, 400
	done := make(chan struct{})
	go func() {
		if pin != nil {
			pin(1)
		}
		for i := int64(1); i <= rounds*trips; i++ {
			for ball.ping.Load() != i {
			}
			ball.pong.Store(i)
		}
		close(done)
	}()
	if pin != nil {
		pin(0)
	}
	var each [rounds]time.Duration
	i := int64(0)
	for r := range each {
		start := time.Now()
		for range trips {
			i++
			ball.ping.Store(i)
			for ball.pong.Load() != i {
			}
		}
		each[r] = time.Since(start) / trips
	}
	<-done
	slices.Sort(each[:])
	return each[rounds/2]
}
