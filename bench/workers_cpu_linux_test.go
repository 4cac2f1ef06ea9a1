package bench

import (
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vknetd/vknetd/engine"
)

// TestWorkersCPUPerFrame measures what --workers costs on real ports: two
// pairs of SEQPACKET clients send 64-byte frames at a fixed rate through
// the switch with 1 loop and with 2, and the loops' threads' CPU time
// (engine.LoopCPU) is reported per million frames forwarded. With 2 loops
// the pairs are placed either within a loop each (cross 0%) or across
// (cross 100%). A measurement, not a check: it runs only when
// VKNETD_CPU_PER_FRAME is set, and reports with -v:
//
//	VKNETD_CPU_PER_FRAME=1 go test -run TestWorkersCPUPerFrame -v ./bench/
func TestWorkersCPUPerFrame(t *testing.T) {
	if os.Getenv("VKNETD_CPU_PER_FRAME") == "" {
		t.Skip("a measurement: set VKNETD_CPU_PER_FRAME=1 to run it")
	}
	const rate = 100000 // frames/s per sender
	const window = 3 * time.Second
	for round := 0; round < 3; round++ {
		for _, c := range []struct {
			workers int
			cross   bool
		}{{1, false}, {2, false}, {2, true}} {
			cpu, frames := workersCPU(t, c.workers, c.cross, rate, window)
			t.Logf("round %d: %d loop(s), cross %v: %d frames in %v, loops' CPU %v: %.3f CPU-s per million frames",
				round, c.workers, c.cross, frames, window, cpu.Round(time.Millisecond), cpu.Seconds()/float64(frames)*1e6)
		}
	}
}

// workersCPU runs the two pairs for window and returns the loops' CPU time
// and the frames the receivers got meanwhile.
func workersCPU(t *testing.T, workers int, cross bool, rate int, window time.Duration) (time.Duration, int64) {
	path, e := startEngine(t, false, 0, func(c *engine.Config) { c.Workers = workers }, nil)
	// Accepted in this order, clients alternate between two loops: a and
	// b share one, c and d the other, unless cross: then a pair's two
	// ends are on different loops.
	order := []string{"a", "c", "b", "d"}
	if cross {
		order = []string{"a", "b", "c", "d"}
	}
	clients := map[string]*Client{}
	for _, name := range order {
		c, err := Dial(path, 32)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients[name] = c
		time.Sleep(20 * time.Millisecond) // accepted in this order
	}
	macs := map[string][6]byte{"a": macA, "b": macB, "c": {0x02, 0, 0, 0, 0, 0x0c}, "d": {0x02, 0, 0, 0, 0, 0x0d}}
	ips := map[string][4]byte{"a": ipA, "b": ipB, "c": {198, 18, 0, 12}, "d": {198, 18, 0, 13}}
	// The receivers speak first, so their MACs are learned; the senders
	// get those broadcasts and nothing else.
	for _, r := range []string{"b", "d"} {
		if err := clients[r].Send(udpFrame([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, macs[r], ips[r], [4]byte{198, 18, 255, 255}, 64), 1); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	var got atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	for _, r := range []string{"a", "b", "c", "d"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				last := 0
				clients[r].ReceiveProgress(1<<30, 50*time.Millisecond, func(n int) {
					if r == "b" || r == "d" {
						got.Add(int64(n - last))
					}
					last = n
				})
			}
		}()
	}
	pairs := [][2]string{{"a", "b"}, {"c", "d"}}
	for _, p := range pairs {
		frame := udpFrame(macs[p[1]], macs[p[0]], ips[p[0]], ips[p[1]], 64)
		wg.Add(1)
		go func() {
			defer wg.Done()
			const batch = 32
			every := time.Duration(batch) * time.Second / time.Duration(rate)
			next := time.Now()
			for !stop.Load() {
				clients[p[0]].Send(frame, batch)
				next = next.Add(every)
				time.Sleep(time.Until(next))
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // warm up
	cpu0, err := e.LoopCPU()
	if err != nil {
		t.Fatal(err)
	}
	got0 := got.Load()
	time.Sleep(window)
	cpu1, err := e.LoopCPU()
	if err != nil {
		t.Fatal(err)
	}
	frames := got.Load() - got0
	stop.Store(true)
	wg.Wait()
	var cpu time.Duration
	for i := range cpu1 {
		cpu += cpu1[i] - cpu0[i]
	}
	return cpu, frames
}
