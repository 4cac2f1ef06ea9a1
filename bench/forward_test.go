//go:build linux

package bench

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/engine"
	"github.com/vknetd/vknetd/internal/testbed"
	"github.com/vknetd/vknetd/mactable"
	"github.com/vknetd/vknetd/secure"
)

var (
	macA = [6]byte{0x02, 0, 0, 0, 0, 0x0a}
	macB = [6]byte{0x02, 0, 0, 0, 0, 0x0b}
	ipA  = [4]byte{198, 18, 0, 10}
	ipB  = [4]byte{198, 18, 0, 11}
)

// udpFrame builds a valid Ethernet/IPv4/UDP frame of size bytes (at least
// 60) between two addresses of 198.18.0.0/15, so it passes secure mode.
func udpFrame(dst, src [6]byte, srcIP, dstIP [4]byte, size int) []byte {
	return testbed.IPv4UDP(src, dst, netip.AddrFrom4(srcIP), netip.AddrFrom4(dstIP), 40000, 9, make([]byte, max(size, 60)-14-20-8))
}

// startSwitch runs an engine without a TAP, listening for SEQPACKET
// clients in a temporary directory; frames never leave this process's
// sockets.
func startSwitch(tb testing.TB, secureMode bool) string {
	path, _ := startEngine(tb, secureMode, engine.Seqpacket, nil, nil)
	return path
}

// startEngine runs an engine without a TAP with one listener of kind in a
// temporary directory, its config changed by tweak, and its loop started by
// run (the loop goroutine's own set-up, such as pinning it to a CPU, goes
// there; nil runs it as is).
func startEngine(tb testing.TB, secureMode bool, kind engine.ListenerKind, tweak func(*engine.Config), run func(loop func() error) error) (string, *engine.Engine) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "vknet")
	sotype := unix.SOCK_SEQPACKET
	if kind != engine.Seqpacket {
		sotype = unix.SOCK_STREAM
	}
	lfd, err := unix.Socket(unix.AF_UNIX, sotype|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	if err := unix.Bind(lfd, &unix.SockaddrUnix{Name: path}); err != nil {
		tb.Fatal(err)
	}
	if err := unix.Listen(lfd, 64); err != nil {
		tb.Fatal(err)
	}
	pcfg := secure.Config{Secure: secureMode, BindingAge: time.Minute, MaxBindings: 1024}
	if secureMode {
		pcfg.Network = netip.MustParsePrefix("198.18.0.1/16")
		pcfg.TapMAC = [6]byte{0x02, 0, 0, 0, 0, 0xfe}
	}
	policy, err := secure.New(pcfg)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := engine.Config{
		TapFd: -1, MTU: 1500, Policy: policy,
		MACTable:  mactable.Config{Capacity: 1024, PortLimit: 16, MaxAge: time.Minute},
		Listeners: []engine.Listener{{Fd: lfd, Kind: kind, Path: path}},
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	e, err := engine.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if run == nil {
		run = func(loop func() error) error { return loop() }
	}
	done := make(chan error, 1)
	go func() { done <- run(e.Run) }()
	tb.Cleanup(func() {
		e.Stop()
		<-done
		unix.Close(lfd)
	})
	return path, e
}

// BenchmarkForward is the forwarding baseline: client A sends b.N frames
// to client B's learned MAC through the switch. frames/s counts frames B
// actually received; dropped/op is the share the switch had to drop
// because B could not keep up (it should stay near 0).
func BenchmarkForward(b *testing.B) {
	for _, mode := range []struct {
		name   string
		secure bool
	}{{"unsecure", false}, {"secure", true}} {
		for _, size := range []int{64, 1514} {
			b.Run(fmt.Sprintf("mode=%s/size=%dB", mode.name, size), func(b *testing.B) {
				benchmarkForward(b, mode.secure, size)
			})
		}
	}
}

func benchmarkForward(b *testing.B, secureMode bool, size int) {
	path := startSwitch(b, secureMode)
	a, err := Dial(path, 32)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	rx, err := Dial(path, 64)
	if err != nil {
		b.Fatal(err)
	}
	defer rx.Close()
	// B introduces itself so the switch learns where macB lives.
	hello := udpFrame([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, macB, ipB, [4]byte{198, 18, 255, 255}, 60)
	if err := rx.Send(hello, 1); err != nil {
		b.Fatal(err)
	}
	if n, _ := a.Receive(1, 2*time.Second); n != 1 {
		b.Fatal("the hello broadcast did not reach the sender's side")
	}
	got, elapsed := sendCounted(b, a, rx, size)
	if got == 0 {
		b.Fatal("no frame was forwarded")
	}
	b.ReportMetric(float64(got)/elapsed.Seconds(), "frames/s")
	b.ReportMetric(float64(b.N-got)/float64(b.N), "dropped/op")
}

// TestForwardBenchmarkHarness runs the benchmark's path once as a test, so
// a broken harness is caught by `go test` and not only by `make bench`.
func TestForwardBenchmarkHarness(t *testing.T) {
	for _, secureMode := range []bool{false, true} {
		path := startSwitch(t, secureMode)
		a, err := Dial(path, 32)
		if err != nil {
			t.Fatal(err)
		}
		rx, err := Dial(path, 32)
		if err != nil {
			t.Fatal(err)
		}
		hello := udpFrame([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, macB, ipB, [4]byte{198, 18, 255, 255}, 60)
		rx.Send(hello, 1)
		if n, _ := a.Receive(1, 2*time.Second); n != 1 {
			t.Fatalf("secure=%v: hello not flooded", secureMode)
		}
		const n = 1000
		go a.Send(udpFrame(macB, macA, ipA, ipB, 64), n)
		got, err := rx.Receive(n, 2*time.Second)
		if err != nil || got == 0 {
			t.Fatalf("secure=%v: received %d of %d: %v", secureMode, got, n, err)
		}
		a.Close()
		rx.Close()
	}
}

// BenchmarkDirect is the transport's limit: the same load generator over a
// plain SEQPACKET socketpair, no switch. A switch moves every frame across
// the transport twice, so about half of this is its ceiling; compare the
// two side by side from one run.
func BenchmarkDirect(b *testing.B) {
	for _, size := range []int{64, 1514} {
		b.Run(fmt.Sprintf("size=%dB", size), func(b *testing.B) {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				b.Fatal(err)
			}
			a := newClient(fds[0], 32)
			rx := newClient(fds[1], 64)
			defer a.Close()
			defer rx.Close()
			got, elapsed := sendCounted(b, a, rx, size)
			b.ReportMetric(float64(got)/elapsed.Seconds(), "frames/s")
		})
	}
}

// sendCounted makes a send b.N frames of size bytes to macB, a window at a
// time, and returns how many rx received and how long that took, from the
// first send to the last frame in; the timer runs only meanwhile.
func sendCounted(b *testing.B, a, rx *Client, size int) (int, time.Duration) {
	frame := udpFrame(macB, macA, ipA, ipB, size)
	win := NewWindow(1024)
	var last time.Time
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	sendErr := make(chan error, 1)
	go func() { sendErr <- a.SendWindowed(frame, b.N, win) }()
	got, err := rx.ReceiveProgress(b.N, 200*time.Millisecond, func(n int) {
		win.Received(n)
		last = time.Now()
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if err := <-sendErr; err != nil {
		b.Fatal(err)
	}
	return got, last.Sub(start)
}
