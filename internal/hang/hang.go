// Package hang turns a test that hangs into a failure within seconds that
// names it. Without it a loop that never ends (a ring index that never
// catches up, a frame that waits for a buffer nobody frees) is ended by
// go test's timeout, ten minutes later, with every goroutine's stack and
// no word of which case of a table it was in.
//
// Typical use, first in a test or in each case of a table:
//
//	defer hang.Guard(t, hang.Ring)()
package hang

import (
	"fmt"
	"runtime/debug"
	"testing"
	"time"
)

// Deadlines that hold on a loaded two-core machine under the race
// detector with a wide margin: a case that needs more is stuck, not slow.
const (
	// Ring is for ring code over memory in the test (milliseconds of work).
	Ring = 10 * time.Second
	// Switch is for a switch forwarding superframes between its ports,
	// through real sockets and a running loop (a second or two of work).
	Switch = 30 * time.Second
)

// Guard ends the test binary if the test t is still running after d: it
// panics naming t, and every goroutine's stack follows, the stuck test's
// among them. A panic, not t.Fatal, because the goroutine that hangs is the
// test's own and cannot be stopped from outside; the cases after it would
// hang the same way. Call the returned stop when the test or case is done.
func Guard(t testing.TB, d time.Duration) (stop func()) {
	name := t.Name()
	timer := time.AfterFunc(d, func() {
		debug.SetTraceback("all")
		panic(fmt.Sprintf("%s: still running after %v: it hangs (the goroutine stacks follow; the test's shows where)", name, d))
	})
	return func() { timer.Stop() }
}
