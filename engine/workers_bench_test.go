package engine

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/handover"
	"github.com/vknetd/vknetd/mactable"
	"github.com/vknetd/vknetd/ring"
)

// benchTransport is an in-memory peer for benchmarks: it offers copies of
// its frames, a batch per read, for as long as it has some left to send,
// and takes whatever it is given, counting it. No syscall per frame and no
// allocation: what a loop costs, without the kernel's share.
type benchTransport struct {
	pool   *ring.Pool
	frames [][]byte // sent in turn
	next   int
	left   atomic.Int64 // frames still to send; the benchmark sets it
	// got and want are a receiver's own, written by its loop only, so no
	// cache line moves between CPUs per write batch; the sink hears once,
	// when the receiver has had all it is due.
	got, want int64
	sink      *benchSink
	// Padded to 128 bytes, a size the allocator aligns to 128: each
	// transport, written by its own loop only, on lines of its own, not
	// shared with the other loop's next one.
	_ [128 - 72]byte
}

// benchCPU is the CPU time the process has used, user and system.
func benchCPU() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchSink says when every receiver has had all it is due. A counter
// shared by the receivers, added to per write batch, moved its cache line
// between the loops' CPUs and counted in their cost per frame.
type benchSink struct {
	receivers atomic.Int64 // receivers still short of their frames
	done      chan struct{}
}

func (s *benchSink) full() {
	if s.receivers.Add(-1) == 0 {
		close(s.done)
	}
}

// benchTransport's size is 128 bytes: this does not compile otherwise.
var _ [128]byte = [unsafe.Sizeof(benchTransport{})]byte{}

func (*benchTransport) caps() transportCaps { return transportCaps{kind: "bench"} }

func (t *benchTransport) read(refs []ring.Ref, _ bool) readResult {
	var res readResult
	left := int(t.left.Load())
	for res.n < len(refs) && res.n < left {
		f := t.frames[t.next]
		t.next = (t.next + 1) % len(t.frames)
		t.pool.SetLen(refs[res.n], copy(t.pool.Buf(refs[res.n]), f))
		res.n++
	}
	// Read again every round while it has frames, as a busy vhost-user
	// ring is.
	res.buffered = t.left.Add(-int64(res.n)) > 0
	return res
}

func (t *benchTransport) write(q txView) writeResult {
	n := q.Len()
	res := writeResult{done: n, frames: uint64(n)}
	for i := 0; i < n; i++ {
		res.bytes += uint64(t.pool.Len(q.At(i)))
	}
	before := t.got
	t.got += int64(n)
	if before < t.want && t.got >= t.want {
		t.sink.full()
	}
	return res
}

func (*benchTransport) ready(uint8, bool) readiness { return readiness{} }
func (*benchTransport) close()                      {}
func (*benchTransport) export(*exportScope, *handover.Port) error {
	return fmt.Errorf("a bench port cannot be handed over")
}

// BenchmarkWorkers is the switch's loops on in-memory ports (no syscall
// per frame; a round's epoll_wait is the only one): two senders and two
// receivers, 64-byte unicast frames. With 2 workers each loop has a
// sender and a receiver, and cross says how many of a sender's frames go
// to the other loop's receiver; with 1 worker all four share the loop.
// The figure is frames/s for the whole switch; run it at -cpu 1,2:
//
//	go test -run '^$' -bench BenchmarkWorkers -benchtime 2000000x -cpu 1,2 ./engine/
func BenchmarkWorkers(b *testing.B) {
	for _, c := range []struct{ workers, cross int }{{1, 0}, {2, 0}, {2, 50}, {2, 100}} {
		b.Run(fmt.Sprintf("workers=%d/cross=%d%%", c.workers, c.cross), func(b *testing.B) {
			benchWorkers(b, c.workers, c.cross)
		})
	}
}

func benchWorkers(b *testing.B, workers, crossPct int) {
	var rtt time.Duration
	if runtime.GOMAXPROCS(0) >= 2 {
		rtt = lineRoundTrip()
	}
	s := newTestSwitch(b, false, mactable.Config{}, withWorkers(workers))
	e := s.e
	sink := &benchSink{done: make(chan struct{})}
	// Port i sends, port 2+i receives, both on loop i%2 (of 2).
	var senders, receivers []*benchTransport
	var ports []*port
	for i := 0; i < 4; i++ {
		l := e.loops[i%2%workers]
		t := &benchTransport{pool: l.pool, sink: sink}
		id, _ := e.ports.reserve(e.cfg.MaxClients, false)
		p := l.openPort(id, t, -1, fmt.Sprintf("bench %d", i))
		if err := l.adopt(p); err != nil {
			b.Fatal(err)
		}
		ports = append(ports, p)
		if i < 2 {
			senders = append(senders, t)
		} else {
			receivers = append(receivers, t)
			// The receivers' MACs are known, as after their first frame.
			m := mac(byte(10 + i))
			e.macs.Learn(mactable.Key(m[:]), id, 0)
		}
	}
	// Sender i's frames: a pattern of 100 in which crossPct go to the
	// other pair's receiver.
	for i, t := range senders {
		for k := 0; k < 100; k++ {
			dst := 2 + i
			if k < crossPct {
				dst = 2 + (1 - i)
			}
			t.frames = append(t.frames, ethFrame(mac(byte(10+dst)), mac(byte(1+i)), 0x0800, 64))
		}
	}
	half := int64(b.N / 2)
	senders[0].left.Store(half)
	senders[1].left.Store(int64(b.N) - half)
	// What each receiver is due: sender i's crossing frames go to the
	// other receiver, the rest to its own.
	for i, t := range senders {
		n := t.left.Load()
		crossing := n/100*int64(crossPct) + min(n%100, int64(crossPct))
		receivers[i].want += n - crossing
		receivers[1-i].want += crossing
	}
	for _, t := range receivers {
		if t.want > 0 {
			sink.receivers.Add(1)
		}
	}
	for i, t := range senders {
		if t.left.Load() > 0 {
			ports[i].loop.readNextRound(ports[i])
		}
	}
	share := runtime.GOMAXPROCS(0) < len(e.loops)
	var stop atomic.Bool
	var wg sync.WaitGroup
	cpu0 := benchCPU()
	b.ResetTimer()
	for _, l := range e.loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				// As run steps: a loop with nothing to do sleeps in its
				// poller until another hands it frames (or the benchmark
				// ends), instead of spinning through epoll_waits that
				// took the CPU the other loop needed and counted in
				// cpu-ns/frame.
				if _, err := l.step(l.sleep(l.timeoutMs())); err != nil {
					panic(err)
				}
				// With fewer CPUs than loops (-cpu 1, 2 workers) the
				// loops take turns a round each, as threads on a fairly
				// shared CPU would, rather than the runtime's 10ms
				// slices, in which the other loop's ring fills
				// (worker-ring-full) while it waits. Not otherwise: a
				// yield with an idle P wakes a thread for it (futex) and
				// moves the loop to another CPU each round, which made
				// one loop at -cpu 2 cost 94 cpu-ns/frame against 51 at
				// -cpu 1; run never yields.
				if share {
					runtime.Gosched()
				}
			}
		}()
	}
	select {
	case <-sink.done:
	case <-time.After(2 * time.Minute):
		stop.Store(true)
		wakeAll(e)
		wg.Wait()
		b.Fatalf("%d receivers of %d frames still short (dropped: see the ports' counters)", sink.receivers.Load(), b.N)
	}
	b.StopTimer()
	cpu := benchCPU() - cpu0
	stop.Store(true)
	wakeAll(e)
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
	// CPU time per frame, every thread's: on a machine shared with other
	// work, frames/s at -cpu 2 says how much CPU the loops got; this says
	// what a frame cost them (a loop waiting for another spins, and
	// that counts too).
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/frame")
	if rtt > 0 {
		b.ReportMetric(float64(rtt.Nanoseconds()), "line-rtt-ns")
	}
	for _, p := range ports {
		for d, n := range p.cnt.drops {
			if n != 0 {
				b.Fatalf("port %d dropped %d frames (%s)", p.id, n, Drop(d))
			}
		}
	}
}

// lineRoundTrip is how long a cache line takes to go from one CPU to
// another and back, measured just before a run between two goroutines
// that spin on it (the median of 25 rounds of 400 trips, so a round in
// which one was descheduled does not count). Every line a crossing frame
// moves between the loops costs about half of it, and it is not a
// constant of the machine: on the 2-vCPU VM this was measured on it was
// 160-230 ns in some hours and 800-950 ns in others, as the host placed
// the two vCPUs, and a crossing frame's cost followed it (README).
func lineRoundTrip() time.Duration {
	var ball struct {
		ping atomic.Int64
		_    [56]byte // ping and pong on lines of their own
		pong atomic.Int64
	}
	const rounds, trips = 25, 400
	done := make(chan struct{})
	go func() {
		for i := int64(1); i <= rounds*trips; i++ {
			for ball.ping.Load() != i {
			}
			ball.pong.Store(i)
		}
		close(done)
	}()
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

// wakeAll interrupts every loop's sleep in its poller.
func wakeAll(e *Engine) {
	for _, l := range e.loops {
		l.wake()
	}
}
