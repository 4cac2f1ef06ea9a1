package engine

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/testbed"
	"github.com/vknetd/vknetd/internal/vhostguest"
	"github.com/vknetd/vknetd/mactable"
	"github.com/vknetd/vknetd/secure"
)

// vhostSwitch runs an engine with a vhost-user listener in its own
// goroutine (the guests' set-up waits for the switch's replies).
func vhostSwitch(t *testing.T, secureMode bool, tweak func(*Config)) (e *Engine, path string) {
	t.Helper()
	e, path = newVhostSwitch(t, secureMode, tweak)
	done := make(chan error, 1)
	go func() { done <- e.Run() }()
	t.Cleanup(func() {
		e.Stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return e, path
}

// newVhostSwitch is vhostSwitch's engine, not running yet.
func newVhostSwitch(t *testing.T, secureMode bool, tweak func(*Config)) (e *Engine, path string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "vhost")
	lfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(lfd) })
	if err := unix.Bind(lfd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(lfd, 16); err != nil {
		t.Fatal(err)
	}
	pcfg := secure.Config{Secure: secureMode, MaxBindings: 1024, BindingAge: time.Minute}
	if secureMode {
		pcfg.Network = netip.MustParsePrefix("198.18.0.1/16")
		pcfg.TapMAC = mac(0xfe)
	}
	policy, err := secure.New(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{TapFd: -1, MTU: 9000, Policy: policy, Logger: quietLogger(), MaxClients: 16,
		MACTable:  mactable.Config{Capacity: 64, PortLimit: 8, MaxAge: time.Minute},
		Listeners: []Listener{{Fd: lfd, Kind: VhostUser, Path: path}}}
	if tweak != nil {
		tweak(&cfg)
	}
	e, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e, path
}

// startGuest connects a Go guest to the switch and brings its device up.
func startGuest(t *testing.T, path string, o vhostguest.Options) *vhostguest.Guest {
	t.Helper()
	g, err := vhostguest.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	fd, err := vhostguest.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	g.Attach(fd)
	if err := g.Start(); err != nil {
		t.Fatalf("starting the guest's device: %v", err)
	}
	g.PostRX(1 << 16)
	return g
}

// receiveFrames collects n frames on g within a few seconds, posting its
// RX buffers back as it goes.
func receiveFrames(t *testing.T, g *vhostguest.Guest, n int) [][]byte {
	t.Helper()
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 10000)
	}
	sizes := make([]int, len(bufs))
	var out [][]byte
	deadline := time.Now().Add(5 * time.Second)
	for len(out) < n && time.Now().Before(deadline) {
		k := g.Receive(bufs, sizes, nil)
		for i := 0; i < k; i++ {
			out = append(out, append([]byte(nil), bufs[i][:sizes[i]]...))
		}
		g.PostRX(k)
		if k == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	return out
}

func TestVhostUserGuestsSwitchFrames(t *testing.T) {
	e, path := vhostSwitch(t, false, nil)
	a := startGuest(t, path, vhostguest.Options{})
	b := startGuest(t, path, vhostguest.Options{NoMergeRX: true, RXBufSize: 9100})
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 2 })

	// b speaks first, so the switch learns where mac(2) is.
	hello := ethFrame(broadcast, mac(2), 0x88b5, 60)
	if b.Send([][]byte{hello}, nil) != 1 {
		t.Fatal("b could not send")
	}
	if got := receiveFrames(t, a, 1); len(got) != 1 || !bytes.Equal(got[0], hello) {
		t.Fatalf("a received %d frames, want b's broadcast", len(got))
	}
	// Then a batch of every size, unicast to b.
	var want [][]byte
	for _, size := range []int{60, 1514, 9014} {
		for i := 0; i < 20; i++ {
			f := ethFrame(mac(2), mac(1), 0x88b5, size)
			f[20] = byte(i)
			want = append(want, f)
		}
	}
	for sent := 0; sent < len(want); {
		sent += a.Send(want[sent:], nil)
	}
	got := receiveFrames(t, b, len(want))
	expectFrames(t, "b", got, want...)
	st, _ := e.Stats()
	for _, p := range st.Ports {
		if p.Kind != "vhost-user" {
			t.Fatalf("port %d has kind %q", p.ID, p.Kind)
		}
	}
}

// A guest without receive buffers is back-pressure for itself only: its
// queue fills and drops are counted, the other guests keep switching, and
// once it posts buffers it gets what waited.
func TestVhostUserGuestWithoutBuffersStallsNobody(t *testing.T) {
	e, path := vhostSwitch(t, false, func(c *Config) { c.QueueLen = 64 })
	a := startGuest(t, path, vhostguest.Options{})
	b := startGuest(t, path, vhostguest.Options{})
	starved, err := vhostguest.New(vhostguest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer starved.Close()
	fd, err := vhostguest.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	starved.Attach(fd)
	if err := starved.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 3 })
	const burst = 1000
	frames := make([][]byte, 32)
	for i := range frames {
		frames[i] = ethFrame(broadcast, mac(1), 0x88b5, 200)
	}
	got := 0
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, 64)
	deadline := time.Now().Add(10 * time.Second)
	for sent := 0; (sent < burst || got < burst) && time.Now().Before(deadline); {
		// At most b's ring (256 buffers) in flight towards b, so its ring
		// always has room for every frame not in it yet, and its queue in
		// the switch never fills, however the switch and this goroutine
		// are scheduled. With no bound, b once got 968 of the 1000 (make
		// test under -race, every package at once): most likely a switch
		// that ran late found a's ring full and b's too, and b's own queue
		// dropped the rest. A failure lists the ports' drops now.
		if sent < burst && sent-got <= 256-32 {
			sent += a.Send(frames[:min(32, burst-sent)], nil)
		}
		k := b.Receive(bufs, sizes, nil)
		b.PostRX(k)
		got += k
		if k == 0 {
			time.Sleep(100 * time.Microsecond)
		}
	}
	st, _ := e.Stats()
	if got != burst {
		t.Fatalf("b received %d of %d broadcasts while a third guest had no buffers; ports: %+v", got, burst, st.Ports)
	}
	var starvedDrops uint64
	for _, p := range st.Ports {
		if p.Queued == 64 {
			for _, d := range p.Drops {
				starvedDrops += d.Count
			}
		}
	}
	if starvedDrops == 0 {
		t.Fatalf("the starved guest's full queue counted no drops: %+v", st.Ports)
	}
	// Buffers at last: the queued frames arrive.
	starved.PostRX(1 << 16)
	if n := len(receiveFrames(t, starved, 64)); n != 64 {
		t.Fatalf("the starved guest got %d of its 64 queued frames after posting buffers", n)
	}
}

// TestVhostUserLongRun streams many batches from one guest to another
// through the switch, small and jumbo frames, unsecure and secure, and
// checks that every frame arrives, in order, and that the run never
// stalls: the switch must come back for frames the guest did not kick for,
// and must ask for (and act on) the receiver's kick whenever it runs out
// of RX buffers, also in the middle of a jumbo frame that spans several
// merged buffers. The sender stays at most the receiver's queue in the
// switch ahead, so nothing is dropped, whichever of the sender's frames
// and the receiver's kick the switch serves first.
func TestVhostUserLongRun(t *testing.T) {
	for _, secureMode := range []bool{false, true} {
		for _, c := range []struct{ size, n int }{{64, 20000}, {9000, 3000}} {
			t.Run(fmt.Sprintf("secure=%v/size=%d", secureMode, c.size), func(t *testing.T) {
				vhostLongRun(t, secureMode, c.size, c.n)
			})
		}
	}
}

func vhostLongRun(t *testing.T, secureMode bool, size, n int) {
	const queueLen, ringSize, rxBuf = 256, 256, 2048
	e, path := vhostSwitch(t, secureMode, func(c *Config) { c.QueueLen = queueLen })
	a := startGuest(t, path, vhostguest.Options{QueueSize: ringSize, RXBufSize: rxBuf})
	b := startGuest(t, path, vhostguest.Options{QueueSize: ringSize, RXBufSize: rxBuf})
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 2 })
	macA, macB := mac(1), mac(2)
	ipA, ipB := [4]byte{198, 18, 0, 10}, [4]byte{198, 18, 0, 11}

	// b speaks first (a broadcast from its address, which secure mode
	// binds), so the switch learns where macB is.
	if b.Send([][]byte{ipv4UDP(broadcast, macB, ipB, [4]byte{198, 18, 255, 255})}, nil) != 1 {
		t.Fatal("b could not send")
	}
	if got := receiveFrames(t, a, 1); len(got) != 1 {
		t.Fatal("b's broadcast did not reach a")
	}

	// The frames carry their number in the UDP payload (so no UDP checksum).
	frame := testbed.IPv4UDP(macA, macB, netip.AddrFrom4(ipA), netip.AddrFrom4(ipB), 4000, 5000, make([]byte, size-42))
	binary.BigEndian.PutUint16(frame[14+20+6:], 0)
	const seqAt = 14 + 20 + 8
	batch := make([][]byte, 32)
	for i := range batch {
		batch[i] = append([]byte(nil), frame...)
	}

	const window = queueLen
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, size+100)
	}
	sizes := make([]int, len(bufs))
	sent, got := 0, 0
	progress := time.Now()
	for got < n {
		if k := min(len(batch), n-sent, window-(sent-got)); k > 0 {
			for i := range batch[:k] {
				binary.BigEndian.PutUint32(batch[i][seqAt:], uint32(sent+i))
			}
			sent += a.Send(batch[:k], nil)
		}
		k := b.Receive(bufs, sizes, nil)
		for i := 0; i < k; i++ {
			if sizes[i] != size {
				t.Fatalf("frame %d: %d bytes, want %d", got, sizes[i], size)
			}
			if seq := binary.BigEndian.Uint32(bufs[i][seqAt:]); seq != uint32(got) {
				st, _ := e.Stats()
				t.Fatalf("frame %d arrived as number %d: lost or reordered; ports %+v", got, seq, st.Ports)
			}
			got++
		}
		if k > 0 {
			b.PostRX(1 << 16) // every free buffer: a jumbo frame spans several
			progress = time.Now()
			continue
		}
		if time.Since(progress) > 10*time.Second {
			st, _ := e.Stats()
			t.Fatalf("stalled: b received %d of %d frames (a sent %d, %d in flight); ports %+v",
				got, n, sent, a.TXInFlight(), st.Ports)
		}
		runtime.Gosched()
	}
	st, _ := e.Stats()
	for _, p := range st.Ports {
		if len(p.Drops) != 0 {
			t.Fatalf("port %d dropped frames: %+v", p.ID, p.Drops)
		}
	}
}

// Idle guests cost nothing: with guests connected and quiet the switch
// sleeps in epoll (no polling of rings), so the process uses next to no
// CPU. A busy-polling loop would use the whole half second.
func TestIdleVhostUserGuestsCostNoCPU(t *testing.T) {
	e, path := vhostSwitch(t, true, nil)
	startGuest(t, path, vhostguest.Options{})
	startGuest(t, path, vhostguest.Options{})
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 2 })
	cpu := func() time.Duration {
		var ru unix.Rusage
		unix.Getrusage(unix.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	before := cpu()
	time.Sleep(500 * time.Millisecond)
	if used := cpu() - before; used > 50*time.Millisecond {
		t.Fatalf("the switch with two idle vhost-user guests used %v of CPU in 500ms: something polls", used)
	}
}

// Forwarding between vhost-user guests allocates nothing, secure mode
// included: counted over 64 frames per run, so one allocation every few
// frames still shows. (The race detector's instrumentation allocates: the
// count is only asserted without it.)
func TestVhostUserForwardingAllocatesNothing(t *testing.T) {
	if raceDetector {
		t.Skip("allocation counts are only meaningful without the race detector")
	}
	for _, secureMode := range []bool{false, true} {
		e, path := vhostSwitch(t, secureMode, nil)
		a := startGuest(t, path, vhostguest.Options{})
		b := startGuest(t, path, vhostguest.Options{})
		waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 2 })
		ip := func(last byte) [4]byte { return [4]byte{198, 18, 1, last} }
		hello := ipv4UDP(broadcast, mac(2), ip(2), [4]byte{198, 18, 255, 255})
		b.Send([][]byte{hello}, nil)
		receiveFrames(t, a, 1)
		frame := ipv4UDP(mac(2), mac(1), ip(1), ip(2))
		batch := make([][]byte, 64)
		for i := range batch {
			batch[i] = frame
		}
		bufs := make([][]byte, 64)
		for i := range bufs {
			bufs[i] = make([]byte, 2048)
		}
		sizes := make([]int, 64)
		allocs := testing.AllocsPerRun(20, func() {
			for sent := 0; sent < len(batch); {
				sent += a.Send(batch[sent:], nil)
			}
			for got := 0; got < len(batch); {
				k := b.Receive(bufs, sizes, nil)
				b.PostRX(1 << 16)
				got += k
			}
		})
		if allocs != 0 {
			t.Fatalf("secure=%v: %.0f allocations per 64 frames through vhost-user", secureMode, allocs)
		}
	}
}
