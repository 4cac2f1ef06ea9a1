package engine

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/mactable"
)

// Performance guards. Timings on these 2-core machines vary by 10-30%, so
// CI holds what does not vary: system calls per forwarded frame at full
// batches, frames copied in user space, allocations, and the queue bound.
// A change that loses batching on a transport, copies a frame twice or
// starts allocating fails here, deterministically.

const guardFrames = 512 // pre-queued per measurement: 16 full batches

// bigSndbuf lets a test client queue guardFrames frames before the switch
// reads any (root may go past net.core.wmem_max).
func bigSndbuf(t *testing.T, fd int) {
	t.Helper()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 8<<20); err != nil {
			t.Fatal(err)
		}
	}
}

// costs is what forwarding some frames took.
type costs struct{ frames, syscalls, copies uint64 }

func (s *testSwitch) measure(run func()) costs {
	sys, cp := s.l.io.syscalls, s.l.io.copies
	run()
	var sent uint64
	for _, p := range s.l.live {
		sent += p.cnt.txFrames
	}
	return costs{frames: sent, syscalls: s.l.io.syscalls - sys, copies: s.l.io.copies - cp}
}

// connectTap gives the switch a TAP port played by a SEQPACKET socketpair,
// which keeps frame boundaries as a TAP fd does; host is the kernel's end.
func connectTap(t *testing.T) (tweak func(*Config), host int) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.SetNonblock(fds[1], true)
	bigSndbuf(t, fds[0])
	bigSndbuf(t, fds[1])
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return func(c *Config) { c.TapFd, c.TapName = fds[1], "tap-test" }, fds[0]
}

func TestSyscallsPerFrameAtFullBatches(t *testing.T) {
	frame := func(dst, src byte) []byte { return ethFrame(mac(dst), mac(src), 0x88b5, 64) }
	batch := uint64(defaultBatch)
	cases := []struct {
		name string
		// perFrame is the bound, in syscalls per frame, with two calls of
		// slack for the read that finds the end.
		perFrame float64
		copies   uint64 // per frame, at most
		run      func(t *testing.T) costs
	}{
		{"seqpacket", 2.0 / float64(batch), 0, func(t *testing.T) costs {
			s := newTestSwitch(t, false, mactable.Config{}, nil)
			a, b := s.connect(), s.connect()
			bigSndbuf(t, a.fd)
			b.send(t, frame(1, 2))
			s.pump()
			a.recv(t)
			for i := 0; i < guardFrames; i++ {
				a.send(t, frame(2, 1))
			}
			c := s.measure(s.pump)
			if got := len(b.recv(t)); got != guardFrames {
				t.Fatalf("b received %d of %d", got, guardFrames)
			}
			return c
		}},
		{"stream", 2.0 / float64(batch), 1, func(t *testing.T) costs {
			s := newTestSwitch(t, false, mactable.Config{}, nil)
			a, b := s.connectStream(), s.connectStream()
			unix.SetNonblock(a.fd, true)
			unix.SetNonblock(b.fd, true)
			unix.Write(b.fd, prefixed(frame(1, 2)))
			s.pump()
			readStreamFrames(t, a.fd)
			var all []byte
			for i := 0; i < guardFrames; i++ {
				all = append(all, prefixed(frame(2, 1))...)
			}
			bigSndbuf(t, a.fd)
			if _, err := unix.Write(a.fd, all); err != nil {
				t.Fatal(err)
			}
			c := s.measure(s.pump)
			if got := len(readStreamFrames(t, b.fd)); got != guardFrames {
				t.Fatalf("b received %d of %d", got, guardFrames)
			}
			return c
		}},
		{"dgram", 0, 0, func(t *testing.T) costs {
			// The kernel queues at most net.unix.max_dgram_qlen datagrams
			// on the listener, so that is the batch a datagram client can
			// get: the bound follows it.
			s, lpath := newDgramSwitch(t)
			dir := t.TempDir()
			a, b := dialDgram(t, dir, "a", ""), dialDgram(t, dir, "b", "")
			b.sendTo(t, lpath, frame(1, 2))
			s.pump()
			a.recv(t)
			qlen := dgramQueueLimit(t)
			var total costs
			got := 0
			for sent := 0; sent < guardFrames; {
				n := min(qlen, guardFrames-sent)
				for i := 0; i < n; i++ {
					a.sendTo(t, lpath, frame(2, 1))
				}
				sent += n
				c := s.measure(s.pump)
				total.syscalls += c.syscalls
				total.copies += c.copies
				got += len(b.recv(t)) // b's socket queues no more than the listener's
			}
			if got != guardFrames {
				t.Fatalf("b received %d of %d", got, guardFrames)
			}
			total.frames = guardFrames
			if perFrame := float64(total.syscalls) / guardFrames; perFrame > 2.0/float64(min(qlen, defaultBatch))+0.01 {
				t.Errorf("dgram: %.3f syscalls per frame with the listener's queue at %d: batching lost", perFrame, qlen)
			}
			return total
		}},
		{"tap to client", 1 + 1.0/float64(batch), 0, func(t *testing.T) costs {
			tweak, host := connectTap(t)
			s := newTestSwitch(t, false, mactable.Config{}, tweak)
			b := s.connect()
			b.send(t, frame(0xfe, 2))
			s.pump()
			drainFrames(t, host)
			for i := 0; i < guardFrames; i++ {
				unix.Write(host, frame(2, 0xfe))
			}
			c := s.measure(s.pump)
			if got := len(b.recv(t)); got != guardFrames {
				t.Fatalf("b received %d of %d", got, guardFrames)
			}
			return c
		}},
		{"client to tap", 1 + 1.0/float64(batch), 0, func(t *testing.T) costs {
			tweak, host := connectTap(t)
			s := newTestSwitch(t, false, mactable.Config{}, tweak)
			a := s.connect()
			bigSndbuf(t, a.fd)
			unix.Write(host, frame(1, 0xfe))
			s.pump()
			a.recv(t)
			for i := 0; i < guardFrames; i++ {
				a.send(t, frame(0xfe, 1))
			}
			c := s.measure(s.pump)
			if got := len(drainFrames(t, host)); got != guardFrames {
				t.Fatalf("the TAP received %d of %d", got, guardFrames)
			}
			return c
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.run(t)
			if c.frames < guardFrames {
				t.Fatalf("only %d of %d frames forwarded", c.frames, guardFrames)
			}
			perFrame := float64(c.syscalls) / float64(guardFrames)
			if tc.perFrame > 0 && c.syscalls > uint64(tc.perFrame*guardFrames)+2 {
				t.Errorf("%.3f syscalls per forwarded frame, bound %.3f: batching lost", perFrame, tc.perFrame)
			}
			if c.copies > tc.copies*guardFrames {
				t.Errorf("%d frames copied in user space for %d frames, at most %d each", c.copies, guardFrames, tc.copies)
			}
			t.Logf("%d frames: %d syscalls (%.3f per frame), %d user-space copies", guardFrames, c.syscalls, perFrame, c.copies)
		})
	}
}

// dgramQueueLimit is net.unix.max_dgram_qlen: how many datagrams the kernel
// queues on one socket.
func dgramQueueLimit(t *testing.T) int {
	b, err := os.ReadFile("/proc/sys/net/unix/max_dgram_qlen")
	if err != nil {
		return 10 // the kernel's default
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 1 {
		t.Fatalf("max_dgram_qlen: %q", b)
	}
	return n
}

// attachMirror attaches a monitor that gets every forwarded frame and
// returns its reading end.
func attachMirror(t *testing.T, s *testSwitch, name string) int {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]) })
	unix.SetNonblock(fds[1], true)
	bigSndbuf(t, fds[1])
	if _, err := s.e.attachMonitor(s.l, fds[1], true, name); err != nil {
		t.Fatal(err)
	}
	return fds[0]
}

// A monitor costs one more send per batch, not one per frame.
func TestMonitorCostsOneSendPerBatch(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, nil)
	a, b := s.connect(), s.connect()
	bigSndbuf(t, a.fd)
	monitor := attachMirror(t, s, "guard")
	b.send(t, ethFrame(mac(1), mac(2), 0x88b5, 64))
	s.pump()
	a.recv(t)
	drainFrames(t, monitor)
	for i := 0; i < guardFrames; i++ {
		a.send(t, ethFrame(mac(2), mac(1), 0x88b5, 64))
	}
	c := s.measure(s.pump)
	if got := len(drainFrames(t, monitor)); got != guardFrames {
		t.Fatalf("the monitor received %d of %d", got, guardFrames)
	}
	if bound := uint64(3*guardFrames/defaultBatch) + 2; c.syscalls > bound {
		t.Errorf("%d syscalls for %d frames to a client and a monitor, bound %d", c.syscalls, guardFrames, bound)
	}
}

// Allocations are counted over many frames per run, so that one
// allocation every few frames still shows (testing.AllocsPerRun rounds
// down to whole allocations per run), on every path a frame can take.
func TestNoAllocationOnAnyPath(t *testing.T) {
	const perRun = 64
	frame := func(dst, src byte) []byte { return ethFrame(mac(dst), mac(src), 0x88b5, 100) }
	buf := make([]byte, 4096)
	drain := func(fd int) {
		for {
			// A plain read: Recvfrom allocates the sender's address.
			if n, err := unix.Read(fd, buf); err != nil || n == 0 {
				return
			}
		}
	}
	for _, secureMode := range []bool{false, true} {
		mode := "unsecure"
		if secureMode {
			mode = "secure"
		}
		tweak, host := connectTap(t)
		s := newTestSwitch(t, secureMode, mactable.Config{}, tweak)
		a, b, c := s.connect(), s.connect(), s.connect()
		st := s.connectStream()
		unix.SetNonblock(st.fd, true)
		bigSndbuf(t, a.fd)
		monitor := attachMirror(t, s, "allocs")
		// Every client owns an address, so secure mode passes its frames.
		udp := func(dst, src byte) []byte {
			return ipv4UDP(mac(dst), mac(src), [4]byte{198, 18, 1, src}, [4]byte{198, 18, 1, dst})
		}
		if !secureMode {
			udp = frame
		}
		for i, cl := range []*testClient{a, b, c} {
			cl.send(t, udp(0xff, byte(i+1)))
		}
		unix.Write(st.fd, prefixed(udp(0xff, 9)))
		unix.Write(host, frame(0xff, 0xfe))
		s.pump()
		for _, fd := range []int{a.fd, b.fd, c.fd, host, monitor} {
			unix.SetNonblock(fd, true)
			drain(fd)
		}
		readStreamFrames(t, st.fd)
		tapPort := s.e.ports.get(0)
		paths := []struct {
			name string
			in   *port
			send func()
			out  []int
		}{
			{"unicast", a.port, sender(a.fd, udp(2, 1)), []int{b.fd}},
			{"flood", a.port, sender(a.fd, udp(0x77, 1)), []int{b.fd, c.fd, host}},
			{"to tap", a.port, sender(a.fd, udp(0xfe, 1)), []int{host}},
			{"from tap", tapPort, sender(host, frame(2, 0xfe)), []int{b.fd}},
			{"stream", st.port, sender(st.fd, prefixed(udp(2, 9))), []int{b.fd}},
		}
		for _, path := range paths {
			before := b.port.cnt.txFrames + c.port.cnt.txFrames + tapPort.cnt.txFrames
			allocs := testing.AllocsPerRun(10, func() {
				for i := 0; i < perRun; i++ {
					path.send()
				}
				for n := 0; n < perRun/defaultBatch+2; n++ {
					s.l.step(0) // the loop itself: each round reads path.in once
				}
				for _, fd := range path.out {
					drain(fd)
				}
				drain(monitor)
			})
			forwarded := b.port.cnt.txFrames + c.port.cnt.txFrames + tapPort.cnt.txFrames - before
			if allocs != 0 {
				t.Errorf("%s %s: %.0f allocations per %d frames", mode, path.name, allocs, perRun)
			}
			if forwarded < 10*perRun {
				t.Errorf("%s %s: only %d frames forwarded: the path was not taken (drops %v %v)", mode, path.name,
					forwarded, path.in.cnt.drops, path.in.cnt.secureDrops)
			}
		}
	}
}

// sender writes the same message to fd each time it is called, without
// allocating.
func sender(fd int, msg []byte) func() {
	return func() { unix.Write(fd, msg) }
}

// The per-port queue holds exactly QueueLen frames: a stuck client's
// backlog stops there, whatever the pool could hold.
func TestQueueBoundIsExact(t *testing.T) {
	const queueLen = 64
	s := newTestSwitch(t, false, mactable.Config{}, func(c *Config) { c.QueueLen = queueLen })
	a, stuck := s.connect(), s.connect()
	unix.SetsockoptInt(stuck.port.fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
	for i := 0; i < 4000; i++ {
		a.send(t, ethFrame(broadcast, mac(1), 0x88b5, 200))
		if i%32 == 31 {
			s.pump()
		}
	}
	s.pump()
	if got := stuck.port.txq.Len(); got != queueLen || stuck.port.txq.Cap() != queueLen {
		t.Fatalf("a stuck client's queue holds %d (capacity %d), want exactly %d", got, stuck.port.txq.Cap(), queueLen)
	}
	if stuck.port.cnt.drops[DropQueueFull] == 0 {
		t.Fatal("no tx-queue-full drops past the bound")
	}
}
