package cacheline

import (
	"runtime"
	"testing"
)

// The two sides meet 10,000 times and the median round comes back; with
// pin called once on each side first.
func TestRoundTrip(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("needs GOMAXPROCS of 2 or more: both sides spin")
	}
	var pinned [2]int
	got := RoundTrip(func(side int) { pinned[side]++ })
	if got <= 0 {
		t.Fatalf("RoundTrip = %v, want a positive duration", got)
	}
	if pinned != [2]int{1, 1} {
		t.Fatalf("pin called %v times per side, want once each", pinned)
	}
}
