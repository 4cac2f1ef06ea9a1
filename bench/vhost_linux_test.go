package bench

import (
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/engine"
	"github.com/vknetd/vknetd/internal/vhostguest"
)

// vhostQueueLen is the switch's queue per port, in frames: how far ahead
// of the receiver vhostCounted lets the sender go.
const vhostQueueLen = 256

// startVhostSwitch runs an engine with a vhost-user listener and no TAP,
// with an MTU for 9000-byte frames, its loop on the second CPU and the
// guests' polling on the first, as a host would place them.
// wake is how the loop waits for its guests: busy-polling for busyPoll, or
// sleeping with Config.Coalesce coalesce.
type wake struct{ busyPoll, coalesce time.Duration }

// daemonWake is the daemon's default: no busy-polling, --coalesce's default.
var daemonWake = wake{coalesce: engine.DefaultCoalesce}

func startVhostSwitch(tb testing.TB, secureMode bool, w wake) (string, *engine.Engine) {
	return startEngine(tb, secureMode, engine.VhostUser, func(c *engine.Config) {
		c.MTU, c.QueueLen, c.BusyPoll, c.Coalesce = 9000, vhostQueueLen, w.busyPoll, w.coalesce
	}, func(loop func() error) error {
		runtime.LockOSThread()
		pinToCPU(1)
		return loop()
	})
}

// pinToCPU binds the calling thread (locked to its goroutine) to cpu, when
// the machine has it.
func pinToCPU(cpu int) {
	if runtime.NumCPU() <= cpu {
		return
	}
	var set unix.CPUSet
	set.Set(cpu)
	unix.SchedSetaffinity(0, &set)
}

// vhostGuest is a guest driven by this process: it polls its rings (as
// DPDK's virtio-user does) rather than waiting for the switch's calls.
func vhostGuest(tb testing.TB, path string) *vhostguest.Guest {
	tb.Helper()
	g, err := vhostguest.New(vhostguest.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(g.Close)
	fd, err := vhostguest.Dial(path)
	if err != nil {
		tb.Fatal(err)
	}
	g.Attach(fd)
	if err := g.Start(); err != nil {
		tb.Fatal(err)
	}
	g.PostRX(1 << 16)
	return g
}

// guestPair connects a sender and a receiver guest and lets the switch
// learn the receiver's MAC; w is how the switch waits for them.
func guestPair(tb testing.TB, secureMode bool, w wake) (a, rx *vhostguest.Guest, e *engine.Engine) {
	path, e := startVhostSwitch(tb, secureMode, w)
	a, rx = vhostGuest(tb, path), vhostGuest(tb, path)
	hello := udpFrame([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, macB, ipB, [4]byte{198, 18, 255, 255}, 60)
	for rx.Send([][]byte{hello}, nil) != 1 {
		runtime.Gosched()
	}
	bufs, sizes := frameBufs(1)
	deadline := time.Now().Add(5 * time.Second)
	for a.Receive(bufs, sizes, nil) != 1 {
		if time.Now().After(deadline) {
			tb.Fatal("the receiver's hello did not reach the sender through the switch")
		}
		runtime.Gosched()
	}
	a.PostRX(1)
	return a, rx, e
}

func frameBufs(n int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, 9100)
	}
	return bufs, make([]int, n)
}

// BenchmarkVhostUser forwards frames from one Go guest to another through
// the switch's vhost-user ports: guest memory shared, rings polled by the
// guests, the switch woken by kicks only when it asked for them, and
// coalescing them as the daemon does by default (--coalesce 20us); with
// "kickeach" (--coalesce 0) every kick wakes it, with "busypoll"
// (--busy-poll 1ms) it polls the rings instead while frames flow, and the
// guests do not kick.
func BenchmarkVhostUser(b *testing.B) {
	for _, mode := range []struct {
		name   string
		secure bool
		wake   wake
	}{
		{"unsecure", false, daemonWake}, {"secure", true, daemonWake},
		{"unsecure-kickeach", false, wake{}}, {"unsecure-busypoll", false, wake{busyPoll: time.Millisecond}},
	} {
		for _, size := range []int{64, 1514, 9000} {
			b.Run(fmt.Sprintf("mode=%s/size=%dB", mode.name, size), func(b *testing.B) {
				a, rx, e := guestPair(b, mode.secure, mode.wake)
				kicks := a.Kicks[1] + rx.Kicks[0]
				cpu := switchCPU(b, e)
				got, elapsed := vhostCounted(b, a, rx, size, b.N)
				b.ReportMetric(float64(got)/elapsed.Seconds(), "frames/s")
				// The switch's own CPU time (its loop's thread), which the
				// guests' driver does not share.
				b.ReportMetric(float64(switchCPU(b, e)-cpu)/float64(max(got, 1)), "switch-cpu-ns/frame")
				b.ReportMetric(float64(b.N-got)/float64(b.N), "dropped/op")
				// Kicks are eventfd writes by the guests (a VM exit for a
				// QEMU guest) and wake-ups of the switch: what busy-polling
				// saves, counted rather than timed.
				b.ReportMetric(float64(a.Kicks[1]+rx.Kicks[0]-kicks)/float64(max(got, 1)), "kicks/frame")
			})
		}
	}
}

// switchCPU is the CPU time the switch's loops have used so far.
func switchCPU(tb testing.TB, e *engine.Engine) time.Duration {
	cpu, err := e.LoopCPU()
	if err != nil {
		tb.Fatal(err)
	}
	var total time.Duration
	for _, c := range cpu {
		total += c
	}
	return total
}

// vhostCounted sends n frames of size bytes from a to rx's MAC and
// returns how many arrived and how long that took, with driveGuests.
//
// a sends at most the switch's queue for rx ahead of what rx has
// received: more can overflow that queue (tx-queue-full drops) whenever
// the switch forwards a's frames before it serves rx's RX kick, even with
// room in rx's ring, and a 9000-byte frame takes 5 of rx's 2 KiB buffers,
// so its ring holds only 51 of them.
func vhostCounted(tb testing.TB, a, rx *vhostguest.Guest, size, n int) (int, time.Duration) {
	frame := udpFrame(macB, macA, ipA, ipB, size)
	batch := make([][]byte, 32)
	for i := range batch {
		batch[i] = frame
	}
	const window = vhostQueueLen
	send := func(sent, received int, _ time.Duration) int {
		if ahead := sent - received; sent < n && ahead < window {
			return a.Send(batch[:min(len(batch), n-sent, window-ahead)], nil)
		}
		return 0
	}
	return driveGuests(tb, rx, size, n, send, nil)
}

// driveGuests is the benchmarks' guest driver: one goroutine on its own
// CPU drives both guests, polling, as a DPDK lcore does. Until n frames
// arrived at rx, it lets send post what it will (send returns how many
// frames it posted, told how many were sent and received so far and the
// time since the start) and takes what arrives, telling got (when not
// nil) how many came in a receive, after how many, and when. It returns
// how many arrived and when the last did.
//
// The run ends early only after stallTimeout without a frame, and only
// if a last look still finds none: on a busy host the driver's own thread
// may be descheduled for longer than a frame takes.
func driveGuests(tb testing.TB, rx *vhostguest.Guest, size, n int, send func(sent, received int, now time.Duration) int,
	got func(received, k int, now time.Duration)) (int, time.Duration) {
	bufs, sizes := frameBufs(64)
	const stallTimeout = 2 * time.Second
	// The driver below never yields its P; with GOMAXPROCS at the number
	// of CPUs (2) the switch's loop, back from epoll_wait, then had to
	// wait for the one other P, held by whatever else ran meanwhile (seen:
	// its thread parked in futex_do_wait with a TX kick pending). One
	// more P than CPUs keeps a P free for it.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), runtime.NumCPU()+1)))
	result := make(chan [2]int64, 1)
	b, _ := tb.(*testing.B)
	if b != nil {
		b.SetBytes(int64(size))
		b.ResetTimer()
	}
	go func() {
		// Locked to the end: the thread pinned to CPU 0 exits with this
		// goroutine instead of going back to the runtime's pool pinned.
		runtime.LockOSThread()
		pinToCPU(0)
		start := time.Now()
		var last time.Duration
		sent, received := 0, 0
		quiet := time.Now()
		for received < n {
			sent += send(sent, received, time.Since(start))
			k := rx.Receive(bufs, sizes, nil)
			if k == 0 && time.Since(quiet) > stallTimeout {
				if k = rx.Receive(bufs, sizes, nil); k == 0 {
					break // lost, or the switch stalled
				}
			}
			if k == 0 {
				continue
			}
			rx.PostRX(1 << 16) // every free buffer: a big frame spans several
			last = time.Since(start)
			if got != nil {
				got(received, k, last)
			}
			received += k
			quiet = time.Now()
		}
		result <- [2]int64{int64(received), int64(last)}
	}()
	r := <-result
	if b != nil {
		b.StopTimer()
	}
	return int(r[0]), time.Duration(r[1])
}

// TestVhostUserBenchmarkHarness runs the benchmark's path once as a test.
func TestVhostUserBenchmarkHarness(t *testing.T) {
	for _, secureMode := range []bool{false, true} {
		a, rx, _ := guestPair(t, secureMode, daemonWake)
		const n = 2000
		if got, _ := vhostCounted(t, a, rx, 1514, n); got != n {
			t.Fatalf("secure=%v: %d of %d frames arrived", secureMode, got, n)
		}
	}
}

// BenchmarkVhostUserPaced is the switch beside guests that are slower than
// it, as most are: a guest sends one frame at a time, one every 2 µs
// (500 000 frames/s), and finds the ring emptied before each. Woken at each
// kick (kickeach, --coalesce 0) the switch pays a wake-up a frame and the
// guest a kick (an eventfd write, a VM exit for a QEMU guest); coalescing
// (the daemon's default) looks at the ring every 20 µs instead, kicks off.
// What to compare: switch-cpu-ns/frame and kicks/frame at the same rate,
// and what coalescing costs in latency: a frame's time from its send to
// its arrival, on average and the 99th percentile. coalesce10us and
// coalesce50us are the default's neighbours, for choosing it.
func BenchmarkVhostUserPaced(b *testing.B) {
	for _, mode := range []struct {
		name string
		wake wake
	}{
		{"coalesce", daemonWake}, {"kickeach", wake{}},
		{"coalesce10us", wake{coalesce: 10 * time.Microsecond}}, {"coalesce50us", wake{coalesce: 50 * time.Microsecond}},
	} {
		b.Run("mode="+mode.name+"/size=64B", func(b *testing.B) {
			a, rx, e := guestPair(b, false, mode.wake)
			kicks := a.Kicks[1] + rx.Kicks[0]
			cpu := switchCPU(b, e)
			got, elapsed, lat := vhostPaced(b, a, rx, 64, b.N, 2*time.Microsecond)
			b.ReportMetric(float64(got)/elapsed.Seconds(), "frames/s")
			b.ReportMetric(lat.mean.Seconds()*1e6, "latency-us")
			b.ReportMetric(lat.p99.Seconds()*1e6, "p99-latency-us")
			b.ReportMetric(float64(switchCPU(b, e)-cpu)/float64(max(got, 1)), "switch-cpu-ns/frame")
			b.ReportMetric(float64(b.N-got)/float64(b.N), "dropped/op")
			b.ReportMetric(float64(a.Kicks[1]+rx.Kicks[0]-kicks)/float64(max(got, 1)), "kicks/frame")
		})
	}
}

// latency is what frames took from their send to their arrival.
type latency struct{ mean, p99 time.Duration }

// vhostPaced sends n frames of size bytes from a to rx, one every
// interval, each on its own (a Send of one frame), and returns how many
// arrived, how long that took, and their latency (a frame is taken to
// arrive when the receive that returns it does), with driveGuests.
func vhostPaced(tb testing.TB, a, rx *vhostguest.Guest, size, n int, interval time.Duration) (int, time.Duration, latency) {
	sentAt := make([]time.Duration, n)
	took := make([]time.Duration, 0, n)
	frame := [][]byte{udpFrame(macB, macA, ipA, ipB, size)}
	send := func(sent, received int, now time.Duration) int {
		if sent < n && now >= time.Duration(sent)*interval && sent-received < vhostQueueLen {
			sentAt[sent] = now
			return a.Send(frame, nil)
		}
		return 0
	}
	arrived := func(received, k int, now time.Duration) {
		for i := received; i < min(received+k, n); i++ {
			took = append(took, now-sentAt[i])
		}
	}
	got, elapsed := driveGuests(tb, rx, size, n, send, arrived)
	var lat latency
	if len(took) > 0 {
		var sum time.Duration
		for _, d := range took {
			sum += d
		}
		slices.Sort(took)
		lat = latency{sum / time.Duration(len(took)), took[len(took)*99/100]}
	}
	return got, elapsed, lat
}
