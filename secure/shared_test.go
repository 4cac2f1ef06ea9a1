package secure

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// sharedPolicy is a policy as the engine's --workers has it (Share).
func sharedPolicy(t *testing.T, cfg Config) *Policy {
	p := newTestPolicy(t, cfg)
	p.Share()
	return p
}

// On a shared policy a frame whose addresses its Checker passed before
// passes without the policy's lock: here the lock is held throughout.
func TestSharedBindPassesWithoutTheLock(t *testing.T) {
	p := sharedPolicy(t, testConfig(false))
	c := p.NewChecker()
	if r := c.FromClient(tcpFrame(macA, ipA, tapIP), portA, 1); r != Pass {
		t.Fatalf("A's first frame: %v", r)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	done := make(chan Reason, 1)
	go func() { done <- c.FromClient(tcpFrame(macA, ipA, tapIP), portA, 2) }()
	select {
	case r := <-done:
		if r != Pass {
			t.Fatalf("A's second frame: %v", r)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("A's second frame waited for the policy's lock")
	}
}

// A revocation is exact: once MoveMAC has returned, no loop passes the
// address from the old port, whatever it remembers, and the new port's
// frames pass. Two loops check frames from the two ports while the
// binding (or the lease) goes back and forth; a check that overlapped no
// move must have the settled port's verdict.
func TestSharedRevocationIsExact(t *testing.T) {
	for _, c := range []struct {
		name    string
		cfg     Config
		refused Reason
	}{
		{"first-use", testConfig(false), IPBindingConflict},
		{"dhcp", dhcpConfig(false), IPNotLeased},
	} {
		t.Run(c.name, func(t *testing.T) {
			testSharedRevocation(t, c.cfg, c.refused)
		})
	}
}

func testSharedRevocation(t *testing.T, cfg Config, refused Reason) {
	p := sharedPolicy(t, cfg)
	p.SetOwner(portA, 1, 1000)
	p.SetOwner(portB, 1, 1000)
	if p.Leases() && !snoop(t, p, ackFrame(macA, ipA, 3600), portA, 1) {
		t.Fatal("the ACK leased nothing")
	}
	if r := p.NewChecker().FromClient(tcpFrame(macA, ipA, tapIP), portA, 1); r != Pass {
		t.Fatalf("A's first frame: %v", r)
	}
	// settled is even while no move runs: 4k+0 the binding is on A, 4k+2
	// on B; odd while a move runs.
	var settled atomic.Uint64
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan string, 2)
	var checked [portB + 1]atomic.Int64
	for _, port := range []uint32{portA, portB} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := p.NewChecker()
			frame := tcpFrame(macA, ipA, tapIP)
			for !stop.Load() {
				s1 := settled.Load()
				r := c.FromClient(frame, port, 2)
				if settled.Load() != s1 || s1%2 == 1 {
					continue // a move overlapped: either verdict is right
				}
				want := Pass
				if onB := s1%4 == 2; onB != (port == portB) {
					want = refused
				}
				if r != want {
					errs <- fmt.Sprintf("port %d, settled %d: %v, want %v", port, s1, r, want)
					return
				}
				checked[port].Add(1)
				runtime.Gosched() // the mover, waiting for this check, runs
			}
		}()
	}
	from, to := portA, portB
	for i := 0; i < 500 && len(errs) == 0; i++ {
		settled.Add(1)
		if p.MoveMAC(macA, from, to) == 0 {
			t.Fatalf("move %d from %d to %d moved nothing", i, from, to)
		}
		settled.Add(1)
		from, to = to, from
		// Each checker checks in this state before the next move, from
		// what it remembers of the last one.
		a, b := checked[portA].Load(), checked[portB].Load()
		for len(errs) == 0 && (checked[portA].Load() < a+2 || checked[portB].Load() < b+2) {
			runtime.Gosched()
		}
	}
	stop.Store(true)
	wg.Wait()
	select {
	case e := <-errs:
		t.Fatal(e)
	default:
	}
	t.Logf("checks between moves: port A %d, port B %d", checked[portA].Load(), checked[portB].Load())
}

// Frames passed from memory do not note their use in the table each time;
// the recorded last use lags by less than refreshEvery, and expiry counts
// that: a binding never ends before the aging time has passed since its
// last frame.
func TestSharedAgingCountsTheRefreshLag(t *testing.T) {
	cfg := testConfig(false)
	cfg.BindingAge = 16 * time.Second // refreshEvery: 1s
	p := sharedPolicy(t, cfg)
	c := p.NewChecker()
	for _, now := range []int64{0, sec / 2, 9 * sec / 10} {
		if r := c.FromClient(tcpFrame(macA, ipA, tapIP), portA, now); r != Pass {
			t.Fatalf("A's frame at %v: %v", time.Duration(now), r)
		}
	}
	if n := p.Expire(9*sec/10 + 16*sec); n != 0 {
		t.Fatalf("the binding ended %v after its last frame, before the aging time", 16*time.Second)
	}
	var expires int64
	p.Bindings(func(b Binding) { expires = b.Expires })
	if want := 17 * sec; expires != want {
		t.Fatalf("listed end %v, want %v (the last use noted, the aging time and the lag)", time.Duration(expires), time.Duration(want))
	}
	if n := p.Expire(17*sec + 1); n != 1 {
		t.Fatalf("Expire past the listed end released %d bindings, want 1", n)
	}
}

// A leased address passed from memory stops passing when its lease ends,
// though nothing changed in the table.
func TestSharedLeaseEndsFromMemory(t *testing.T) {
	p := sharedPolicy(t, dhcpConfig(false))
	c := p.NewChecker()
	if !snoop(t, p, ackFrame(macA, ipA, 10), portA, 0) {
		t.Fatal("the ACK leased nothing")
	}
	for _, s := range []struct {
		now  int64
		want Reason
	}{{1 * sec, Pass}, {10*sec - 1, Pass}, {10 * sec, IPNotLeased}} {
		if r := c.FromClient(tcpFrame(macA, ipA, tapIP), portA, s.now); r != s.want {
			t.Fatalf("at %v: %v, want %v", time.Duration(s.now), r, s.want)
		}
	}
}

// A shared policy's check allocates nothing, from memory or under the lock.
func TestSharedZeroAllocs(t *testing.T) {
	cfg := testConfig(false)
	cfg.BindingAge = 16 * time.Second // refreshEvery: 1s
	p := sharedPolicy(t, cfg)
	c := p.NewChecker()
	tcp := tcpFrame(macA, ipA, tapIP)
	var now int64
	assertNoAllocs(t, "from memory and refreshed under the lock", func() {
		now += sec / 4
		if c.FromClient(tcp, portA, now) != Pass {
			t.Fatal("legit TCP dropped")
		}
	})
	assertNoAllocs(t, "revoked and bound again", func() {
		p.RemovePort(portA)
		if c.FromClient(tcp, portA, now) != Pass {
			t.Fatal("legit TCP dropped")
		}
	})
}
