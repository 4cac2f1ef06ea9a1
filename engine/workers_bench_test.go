package engine

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/cacheline"
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

// busyCPU is the time every CPU of the machine spent running anything,
// from /proc/stat (Linux; 10 ms ticks): less the benchmark's own CPU
// time, what other processes took from the loops during a run. false
// where it cannot be read.
func busyCPU() (time.Duration, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, false
	}
	var ticks int64
	for i, v := range f[1:8] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, true
}

// benchSink says when every receiver has had all it is due. A counter
// shared by the receivers, added to per write batch, moved its cache line
// between the loops' CPUs and counted in their cost per frame.
//
// It also keeps the run's clock: the run ends when the last receiver has
// its last frame, not when the benchmark's goroutine wakes to see it. That
// wake-up waited for the runtime to take back the processor of the loop
// that closed done, asleep in epoll_wait by then: up to 10 ms (sysmon's
// period when idle) of a 100 ms run, in which the loops did nothing.
type benchSink struct {
	receivers atomic.Int64 // receivers still short of their frames
	done      chan struct{}
	// start is when the loops started; firstRead how long after it the
	// first sender had sent all its frames (from then on its loop only
	// takes what the other hands it, if anything), lastFull when the last
	// receiver had all it was due.
	start               time.Time
	firstRead, lastFull atomic.Int64
}

func (s *benchSink) full() {
	at := int64(time.Since(s.start))
	if s.receivers.Add(-1) == 0 {
		s.lastFull.Store(at)
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
	if !res.buffered {
		t.sink.firstRead.CompareAndSwap(0, int64(time.Since(t.sink.start)))
	}
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
// switches=2/workers=1 is two switches of a loop each, a pair on each:
// what two loops that share nothing reach, the machine's ceiling. The
// figure is frames/s for the whole switch; run it at -cpu 1,2:
//
//	go test -run '^$' -bench BenchmarkWorkers -benchtime 2000000x -cpu 1,2 ./engine/
//
// On a VM, compare runs only with the same line-rtt-ns (it moves as the
// host places the vCPUs), a loop-cpu-skew near 1 and little others-cpu-%
// (README, "Workers").
func BenchmarkWorkers(b *testing.B) {
	for _, c := range []struct{ workers, cross int }{{1, 0}, {2, 0}, {2, 50}, {2, 100}} {
		b.Run(fmt.Sprintf("workers=%d/cross=%d%%", c.workers, c.cross), func(b *testing.B) {
			benchWorkers(b, 1, c.workers, c.cross)
		})
	}
	// The machine's ceiling for 2 loops: two switches of one loop each,
	// a sender and a receiver on each, sharing nothing (not the pool, the
	// MAC table or anything else) but the process and the CPUs.
	b.Run("switches=2/workers=1", func(b *testing.B) { benchWorkers(b, 2, 1, 0) })
}

// benchWorkers runs the frames through switches switches of workers
// loops each: with 2 switches each has one sender and one receiver.
func benchWorkers(b *testing.B, switches, workers, crossPct int) {
	var rtt, stream time.Duration
	if runtime.GOMAXPROCS(0) >= 2 {
		rtt = cacheline.RoundTrip(nil)
		stream = lineStream()
	}
	var engines []*Engine
	var loops []*loop
	for range switches {
		e := newTestSwitch(b, false, mactable.Config{}, withWorkers(workers)).e
		engines = append(engines, e)
		loops = append(loops, e.loops...)
	}
	sink := &benchSink{done: make(chan struct{})}
	// Port i sends, port 2+i receives, both on loop i%2 (of 2).
	var senders, receivers []*benchTransport
	var ports []*port
	for i := 0; i < 4; i++ {
		e := engines[i%2%switches]
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
	share := runtime.GOMAXPROCS(0) < len(loops)
	var stop atomic.Bool
	var wg sync.WaitGroup
	cpu0 := benchCPU()
	busy0, busyOK := busyCPU()
	b.ResetTimer()
	sink.start = time.Now()
	// Each loop's CPU time, its thread's: locked to one, as Run's loops are.
	loopCPU := make([]time.Duration, len(loops))
	for i, l := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cpu0 := benchThreadCPU()
			defer func() { loopCPU[i] = benchThreadCPU() - cpu0 }()
			for !stop.Load() {
				// As run steps: a loop with nothing to do sleeps in its
				// poller until another hands it frames (or the benchmark
				// ends), instead of spinning through epoll_waits that
				// took the CPU the other loop needed and counted in
				// cpu-ns/frame.
				if _, err := l.step(l.sleep(l.timeout())); err != nil {
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
		wakeAll(loops)
		wg.Wait()
		b.Fatalf("%d receivers of %d frames still short (dropped: see the ports' counters)", sink.receivers.Load(), b.N)
	}
	b.StopTimer()
	cpu := benchCPU() - cpu0
	busy1, busyOK1 := busyCPU()
	stop.Store(true)
	wakeAll(loops)
	wg.Wait()
	// From the start to the last receiver's last frame (benchSink).
	b.ReportMetric(float64(b.N)/time.Duration(sink.lastFull.Load()).Seconds(), "frames/s")
	// CPU time per frame, every thread's: on a machine shared with other
	// work, frames/s at -cpu 2 says how much CPU the loops got; this says
	// what a frame cost them (a loop waiting for another spins, and
	// that counts too).
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/frame")
	if rtt > 0 {
		b.ReportMetric(float64(rtt.Nanoseconds()), "line-rtt-ns")
		b.ReportMetric(float64(stream.Nanoseconds()), "line-stream-ns")
	}
	if busyOK && busyOK1 {
		// What other processes ran on the machine's CPUs during the run,
		// as a share of the loops' CPUs (from ticks of 10 ms: rough).
		others := max(0, busy1-busy0-cpu)
		b.ReportMetric(100*float64(others)/float64(min(len(loops), runtime.GOMAXPROCS(0)))/float64(b.Elapsed()), "others-cpu-%")
	}
	if len(loops) > 1 {
		// The share of the run in which one sender had sent all its
		// frames and the other had not: its loop had only the other's
		// crossing frames to take, if any, and the run went on at the
		// other loop's pace.
		b.ReportMetric(100*(1-float64(sink.firstRead.Load())/float64(sink.lastFull.Load())), "tail-%")
		// The slower loop's CPU time against the faster one's, for the
		// same frames read and the same pattern: above 1, one CPU did the
		// same work slower (a host that gives one vCPU less, at times
		// 1.7 times less), and the switch is as fast as that CPU lets it.
		if slices.Min(loopCPU) > 0 {
			b.ReportMetric(float64(slices.Max(loopCPU))/float64(slices.Min(loopCPU)), "loop-cpu-skew")
		}
	}
	for _, p := range ports {
		for d, n := range p.cnt.drops {
			if n != 0 {
				b.Fatalf("port %d dropped %d frames (%s)", p.id, n, Drop(d))
			}
		}
	}
}

// benchThreadCPU is the CPU time the calling thread has used.
func benchThreadCPU() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

// lineStream is what a line costs to move from one CPU to another in a
// stream, as a crossing frame's data does at the least, with nothing of
// the switch around it: one goroutine writes 64-byte buffers (1024 of
// them, in a shuffled order) and publishes them 32 at a time, another reads each and
// says so 32 at a time, both spinning. The misses of a batch overlap,
// so this is well under half the round trip, and it is the floor of a
// crossing frame's extra cost, which moves a pool record and an entry's
// share of a line besides.
func lineStream() time.Duration {
	const bufs, batch, lines = 1024, 32, 1 << 18
	var ring struct {
		head atomic.Uint64
		_    [56]byte
		tail atomic.Uint64
		_    [56]byte
	}
	data := make([][8]uint64, bufs) // a line each, aligned: 64-byte objects are
	// In a shuffled order, as the pool's free stacks hand buffers out,
	// so that no prefetcher sees a stream coming.
	order := make([]uint16, bufs)
	for i, j := range rand.New(rand.NewPCG(1, 2)).Perm(bufs) {
		order[i] = uint16(j)
	}
	done := make(chan uint64)
	go func() {
		var sum uint64
		for h := uint64(0); h < lines; {
			t := ring.tail.Load()
			for ; h < t; h++ {
				d := &data[order[h%bufs]]
				sum += d[0] + d[7]
				if h%batch == batch-1 {
					ring.head.Store(h + 1)
				}
			}
		}
		done <- sum
	}()
	start := time.Now()
	for t := uint64(0); t < lines; t++ {
		for t-ring.head.Load() >= bufs-batch {
		}
		d := &data[order[t%bufs]]
		for i := range d {
			d[i] = t
		}
		if t%batch == batch-1 {
			ring.tail.Store(t + 1)
		}
	}
	<-done
	return time.Since(start) / lines
}

// wakeAll interrupts every loop's sleep in its poller.
func wakeAll(loops []*loop) {
	for _, l := range loops {
		l.wake()
	}
}
