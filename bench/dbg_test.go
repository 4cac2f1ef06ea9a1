package bench

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/vknetd/vknetd/engine"
	"github.com/vknetd/vknetd/internal/vhostguest"
)

func dumpGuest(name string, g *vhostguest.Guest) string {
	m := g.Mem()
	s := ""
	for q := 0; q < 2; q++ {
		_, av, us := g.RingOffsets(q)
		aw := atomic.LoadUint32((*uint32)(unsafe.Pointer(&m[av])))
		uw := atomic.LoadUint32((*uint32)(unsafe.Pointer(&m[us])))
		usedEvent := binary.LittleEndian.Uint16(m[av+4+2*256:])
		availEvent := binary.LittleEndian.Uint16(m[us+4+8*256:])
		s += fmt.Sprintf("  %s q%d: avail idx %d flags %d used_event %d | used idx %d flags %d avail_event %d; kicks %v\n", name, q,
			aw>>16, aw&0xffff, usedEvent, uw>>16, uw&0xffff, availEvent, g.Kicks)
	}
	return s
}

func dbgCounted(tb testing.TB, e *engine.Engine, a, rx *vhostguest.Guest, size, n int) (int, time.Duration, string) {
	frame := udpFrame(macB, macA, ipA, ipB, size)
	batch := make([][]byte, 32)
	for i := range batch {
		batch[i] = frame
	}
	bufs, sizes := frameBufs(64)
	const window = 512
	type res struct {
		got  int
		d    time.Duration
		dump string
	}
	result := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		pinToCPU(0)
		start := time.Now()
		var last time.Duration
		sent, received := 0, 0
		quiet := time.Now()
		dump := ""
		lastSend := 0
		for received < n {
			lastSend = -1
			if ahead := sent - received; sent < n && ahead < window {
				lastSend = a.Send(batch[:min(len(batch), n-sent, window-ahead)])
				sent += lastSend
			}
			k := rx.Receive(bufs, sizes)
			if k == 0 {
				if time.Since(quiet) > 500*time.Millisecond {
					dump = fmt.Sprintf("sent %d received %d lastSend %d\n", sent, received, lastSend) + dumpGuest("A", a) + dumpGuest("B", rx) + e.DebugVhost()
					break // the rest was dropped
				}
				continue
			}
			rx.PostRX(1 << 16)
			received += k
			last = time.Since(start)
			quiet = time.Now()
		}
		result <- res{received, last, dump}
	}()
	r := <-result
	return r.got, r.d, r.dump
}

func TestDbgVhost(t *testing.T) {
	for _, c := range []struct {
		sec  bool
		size int
	}{{true, 64}, {false, 64}, {true, 64}, {false, 64}, {true, 64}, {false, 64}} {
		a, rx, e := guestPair(t, c.sec)
		got, el, dump := dbgCounted(t, e, a, rx, c.size, 200000)
		t.Logf("secure %v size %d: got %d in %v: %.0f fps\n%s", c.sec, c.size, got, el, float64(got)/el.Seconds(), dump)
	}
}
