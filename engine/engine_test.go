package engine

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/testbed"
	"github.com/vknetd/vknetd/mactable"
	"github.com/vknetd/vknetd/secure"
)

var broadcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func mac(b byte) [6]byte { return [6]byte{0x02, 0, 0, 0, 0, b} }

func ethFrame(dst, src [6]byte, etherType uint16, size int) []byte {
	f := make([]byte, size)
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:14], etherType)
	for i := 14; i < size; i++ {
		f[i] = byte(i)
	}
	return f
}

type testSwitch struct {
	t testing.TB
	e *Engine
	l *loop // the first loop, which tests run round by round (step)
}

type testClient struct {
	fd   int
	port *port
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestSwitch(t testing.TB, secureMode bool, mt mactable.Config, tweak func(*Config)) *testSwitch {
	t.Helper()
	pcfg := secure.Config{Secure: secureMode, MaxBindings: 1024, BindingAge: time.Minute}
	if secureMode {
		pcfg.Network = netip.MustParsePrefix("198.18.0.1/16")
		pcfg.TapMAC = mac(0xfe)
	}
	policy, err := secure.New(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	if mt.Capacity == 0 {
		mt.Capacity = 1024
	}
	if mt.PortLimit == 0 {
		mt.PortLimit = 64
	}
	if mt.MaxAge == 0 {
		mt.MaxAge = 300 * time.Second
	}
	cfg := Config{TapFd: -1, MTU: 1500, MACTable: mt, Policy: policy, MaxClients: 16, Logger: quietLogger()}
	if tweak != nil {
		tweak(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, l := range e.loops {
			for _, p := range l.live {
				p.dead = true
			}
			l.reap()
			l.closePoller()
		}
		e.pool.Close() // what Run does at its end: fuzzing makes thousands of these
	})
	return &testSwitch{t: t, e: e, l: e.loops[0]}
}

// connect adds a client over a socketpair, as accept would.
func (s *testSwitch) connect() *testClient {
	s.t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := unix.SetNonblock(fds[1], true); err != nil {
		s.t.Fatal(err)
	}
	p, err := s.e.addClient(fds[1], Seqpacket, "test")
	if err != nil {
		s.t.Fatal(err)
	}
	c := &testClient{fd: fds[0], port: p}
	s.t.Cleanup(c.close)
	return c
}

// close hangs up the client's end (once).
func (c *testClient) close() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

// pump runs the loop (step) without waiting until the switch is idle: no
// fd is reported and no port carried to the next round. A port that is
// reported but gets nowhere (no buffer to read into) would be reported
// forever: pump also stops after rounds that change nothing.
func (s *testSwitch) pump() {
	s.t.Helper()
	last, same := s.progress(), 0
	for round := 0; round < 100000; round++ {
		idle := true
		for _, l := range s.e.loops {
			reports, err := l.step(0)
			if err != nil {
				s.t.Fatal(err)
			}
			idle = idle && reports == 0 && !l.hasWork()
		}
		if idle {
			return
		}
		now := s.progress()
		if now != last {
			last, same = now, 0
		} else if same++; same == 3 {
			return
		}
	}
	s.t.Fatal("the switch never became idle")
}

// progress sums what a round of the loop changes when it gets anywhere.
func (s *testSwitch) progress() uint64 {
	sum := uint64(s.e.pool.Free())
	for _, l := range s.e.loops {
		sum += uint64(len(l.live)) + uint64(l.pool.Cached())
		for _, p := range l.live {
			sum += p.cnt.rxFrames + p.cnt.txFrames + uint64(p.txq.Len())
			for d, n := range p.cnt.drops {
				if Drop(d) != DropNoBuffer {
					sum += n
				}
			}
		}
	}
	return sum
}

// advance moves the switch's clock on by exactly d, as if d had passed,
// on every loop: no real time is added, so a test may hold the clock to
// the millisecond. A test that aims at a time the switch gave out (an
// end) measures d on the switch's clock (clockNow), not with time.Until.
func (s *testSwitch) advance(d time.Duration) {
	s.e.start = s.e.start.Add(-d)
	for _, l := range s.e.loops {
		l.now += int64(d)
	}
}

// clockNow is the time on the first loop's clock.
func (s *testSwitch) clockNow() time.Time {
	return s.e.start.Add(time.Duration(s.l.now))
}

func (c *testClient) send(t *testing.T, frame []byte) {
	t.Helper()
	if _, err := unix.Write(c.fd, frame); err != nil {
		t.Fatalf("client write: %v", err)
	}
}

// recv returns every frame waiting for the client.
func (c *testClient) recv(t *testing.T) [][]byte {
	t.Helper()
	return drainFrames(t, c.fd)
}

// drainFrames reads fd's messages, one frame each, until none is waiting.
func drainFrames(t *testing.T, fd int) [][]byte {
	t.Helper()
	var out [][]byte
	buf := make([]byte, 70000)
	for {
		n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err == unix.EAGAIN {
			return out
		}
		if err != nil {
			t.Fatalf("client read: %v", err)
		}
		out = append(out, append([]byte(nil), buf[:n]...))
	}
}

func expectFrames(t *testing.T, who string, got [][]byte, want ...[]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s received %d frames, want %d", who, len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s frame %d differs: got % x want % x", who, i, got[i][:14], want[i][:14])
		}
	}
}

func TestLearnedUnicastGoesToOnePortOnly(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, nil)
	a, b, c := s.connect(), s.connect(), s.connect()

	// b announces itself with a broadcast: everyone but b sees it.
	hello := ethFrame(broadcast, mac(2), 0x0806, 60)
	b.send(t, hello)
	s.pump()
	expectFrames(t, "a", a.recv(t), hello)
	expectFrames(t, "c", c.recv(t), hello)
	expectFrames(t, "b (sender)", b.recv(t))

	// a to b's learned MAC: only b.
	toB := ethFrame(mac(2), mac(1), 0x0800, 100)
	a.send(t, toB)
	s.pump()
	expectFrames(t, "b", b.recv(t), toB)
	expectFrames(t, "c", c.recv(t))
	expectFrames(t, "a (sender)", a.recv(t))

	// An unknown destination floods to all others.
	unknown := ethFrame(mac(9), mac(3), 0x0800, 80)
	c.send(t, unknown)
	s.pump()
	expectFrames(t, "a", a.recv(t), unknown)
	expectFrames(t, "b", b.recv(t), unknown)
	expectFrames(t, "c (sender)", c.recv(t))

	// Multicast floods even though nobody "owns" it.
	mcast := ethFrame([6]byte{0x01, 0x00, 0x5e, 0, 0, 1}, mac(1), 0x0800, 80)
	a.send(t, mcast)
	s.pump()
	expectFrames(t, "b", b.recv(t), mcast)
	expectFrames(t, "c", c.recv(t), mcast)

	// A frame for a MAC learned on the sender's own port goes nowhere.
	self := ethFrame(mac(1), mac(7), 0x0800, 80)
	a.send(t, self)
	s.pump()
	expectFrames(t, "b", b.recv(t))
	expectFrames(t, "c", c.recv(t))
	if got := a.port.cnt.drops[DropSamePort]; got != 1 {
		t.Fatalf("same-port drops = %d, want 1", got)
	}
}

func TestMACMovesBetweenPortsWhenUnsecure(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, nil)
	a, b, c := s.connect(), s.connect(), s.connect()
	a.send(t, ethFrame(broadcast, mac(5), 0x0800, 60))
	s.pump()
	b.recv(t)
	c.recv(t)
	// The VM behind mac(5) now talks through b.
	b.send(t, ethFrame(broadcast, mac(5), 0x0800, 60))
	s.pump()
	a.recv(t)
	c.recv(t)
	f := ethFrame(mac(5), mac(3), 0x0800, 70)
	c.send(t, f)
	s.pump()
	expectFrames(t, "b (new owner)", b.recv(t), f)
	expectFrames(t, "a (old owner)", a.recv(t))
}

func TestSecureModeRefusesMACTakeover(t *testing.T) {
	s := newTestSwitch(t, true, mactable.Config{}, nil)
	a, b := s.connect(), s.connect()
	a.send(t, ipv4UDP(broadcast, mac(5), [4]byte{198, 18, 0, 5}, [4]byte{198, 18, 255, 255}))
	s.pump()
	if len(b.recv(t)) != 1 {
		t.Fatal("a's legitimate frame did not pass")
	}
	b.send(t, ipv4UDP(broadcast, mac(5), [4]byte{198, 18, 0, 6}, [4]byte{198, 18, 255, 255}))
	s.pump()
	expectFrames(t, "a", a.recv(t))
	if got := b.port.cnt.drops[DropMACInUse]; got != 1 {
		t.Fatalf("src-mac-in-use drops on b = %d, want 1", got)
	}
	if port, _ := s.e.macs.Lookup(macKey(5), s.l.now); port != a.port.id {
		t.Fatalf("mac(5) moved to port %d", port)
	}
	// The refused frame bound nothing: 198.18.0.6 is free for its owner.
	c := s.connect()
	c.send(t, ipv4UDP(broadcast, mac(7), [4]byte{198, 18, 0, 6}, [4]byte{198, 18, 255, 255}))
	s.pump()
	if len(a.recv(t)) != 1 {
		t.Fatalf("the rightful owner of 198.18.0.6 was refused: drops %v %v", c.port.cnt.drops, c.port.cnt.secureDrops)
	}
}

func TestAgingForgetsSilentMACs(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{MaxAge: 2 * time.Second}, nil)
	a, b, c := s.connect(), s.connect(), s.connect()
	b.send(t, ethFrame(broadcast, mac(2), 0x0800, 60))
	s.pump()
	a.recv(t)
	c.recv(t)
	f := ethFrame(mac(2), mac(1), 0x0800, 60)
	a.send(t, f)
	s.pump()
	expectFrames(t, "c before aging", c.recv(t))
	b.recv(t)

	s.advance(3 * time.Second)
	s.pump() // its round sweeps: a second has passed
	if n := s.e.macs.PortLen(b.port.id); n != 0 {
		t.Fatalf("b still holds %d MACs after aging", n)
	}
	a.send(t, f)
	s.pump()
	expectFrames(t, "c after aging (flooded)", c.recv(t), f)
	expectFrames(t, "b after aging", b.recv(t), f)
}

func TestDisconnectRemovesMACsAtOnce(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, nil)
	a, b, c := s.connect(), s.connect(), s.connect()
	b.send(t, ethFrame(broadcast, mac(2), 0x0800, 60))
	s.pump()
	a.recv(t)
	c.recv(t)
	if s.e.macs.PortLen(b.port.id) != 1 {
		t.Fatal("b's MAC was not learned")
	}
	b.close()
	s.pump()
	if !b.port.dead || s.e.ports.get(b.port.id) != nil {
		t.Fatal("b's port was not closed after it hung up")
	}
	if _, ok := s.e.macs.Lookup(macKey(2), s.l.now); ok {
		t.Fatal("b's MAC outlived its port")
	}
	f := ethFrame(mac(2), mac(1), 0x0800, 60)
	a.send(t, f)
	s.pump()
	expectFrames(t, "c (flooded, owner gone)", c.recv(t), f)
	st := s.e.stats()
	if st.Clients != 2 || st.Departed.RxFrames != 1 {
		t.Fatalf("stats after disconnect: clients %d departed rx %d", st.Clients, st.Departed.RxFrames)
	}
}

func TestPerPortMACLimit(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{PortLimit: 4, Capacity: 8}, nil)
	a, b := s.connect(), s.connect()
	for i := 0; i < 40; i++ {
		a.send(t, ethFrame(broadcast, mac(byte(100+i)), 0x0800, 60))
	}
	s.pump()
	if got := len(b.recv(t)); got != 40 {
		t.Fatalf("b got %d of 40 frames from a's many MACs (unsecure mode forwards them)", got)
	}
	if n := s.e.macs.PortLen(a.port.id); n != 4 {
		t.Fatalf("a holds %d MACs, limit 4", n)
	}
	if a.port.cnt.unlearned != 36 {
		t.Fatalf("unlearned = %d, want 36", a.port.cnt.unlearned)
	}
	b.send(t, ethFrame(broadcast, mac(2), 0x0800, 60))
	s.pump()
	if _, ok := s.e.macs.Lookup(macKey(2), s.l.now); !ok {
		t.Fatal("b could not learn its MAC after a hit its limit")
	}
}

func TestRuntAndOversizeAreCounted(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, nil)
	a, b := s.connect(), s.connect()
	a.send(t, make([]byte, 13))
	a.send(t, ethFrame(broadcast, mac(1), 0x0800, 1500+14+1))
	a.send(t, ethFrame(broadcast, mac(1), 0x8100, 1500+18+1))
	ok := ethFrame(broadcast, mac(1), 0x0800, 1500+14)
	tagged := ethFrame(broadcast, mac(1), 0x8100, 1500+18)
	a.send(t, ok)
	a.send(t, tagged)
	s.pump()
	expectFrames(t, "b", b.recv(t), ok, tagged)
	if a.port.cnt.drops[DropRunt] != 1 || a.port.cnt.drops[DropOversize] != 2 {
		t.Fatalf("drops runt=%d oversize=%d", a.port.cnt.drops[DropRunt], a.port.cnt.drops[DropOversize])
	}
	huge := ethFrame(broadcast, mac(1), 0x0800, 9000)
	a.send(t, huge)
	s.pump()
	if a.port.cnt.drops[DropOversize] != 3 || len(b.recv(t)) != 0 {
		t.Fatal("a frame far above the buffer size was not dropped as oversize")
	}
}

// A client that never reads costs only its own frames: the others get
// every frame of a burst and the stuck client's drops are counted.
func TestStuckClientDoesNotStallOthers(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, func(c *Config) { c.QueueLen = 64 })
	a, b, stuck := s.connect(), s.connect(), s.connect()
	const burst = 20000
	received := 0
	for i := 0; i < burst; i++ {
		f := ethFrame(broadcast, mac(1), 0x0800, 200)
		binary.BigEndian.PutUint32(f[14:], uint32(i))
		a.send(t, f)
		if i%32 == 31 {
			s.pump()
			for _, g := range b.recv(t) {
				if got := binary.BigEndian.Uint32(g[14:]); got != uint32(received) {
					t.Fatalf("b got frame %d, want %d", got, received)
				}
				received++
			}
		}
	}
	s.pump()
	received += len(b.recv(t))
	if received != burst {
		t.Fatalf("b received %d of %d frames", received, burst)
	}
	drops := stuck.port.cnt.drops[DropQueueFull] + stuck.port.cnt.drops[DropPoolPressure]
	if drops == 0 || stuck.port.cnt.txFrames+drops+uint64(stuck.port.txq.Len()) != burst {
		t.Fatalf("stuck client: sent %d, dropped %d, queued %d of %d", stuck.port.cnt.txFrames, drops, stuck.port.txq.Len(), burst)
	}
	if !stuck.port.writeArmed {
		t.Fatal("stuck client's backlog did not arm write readiness")
	}
	if a.port.cnt.drops != ([numDrops]uint64{}) || b.port.cnt.drops != ([numDrops]uint64{}) {
		t.Fatalf("healthy ports dropped frames: a %v b %v", a.port.cnt.drops, b.port.cnt.drops)
	}
}

// Pool exhaustion by many stuck clients must not stop reading: the
// pressure rule keeps a reserve.
func TestStuckClientsCannotDrainThePool(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, func(c *Config) { c.Buffers = 512; c.QueueLen = 256 })
	a, b := s.connect(), s.connect()
	for i := 0; i < 6; i++ {
		s.connect() // never read
	}
	received := 0
	for i := 0; i < 20000; i++ {
		a.send(t, ethFrame(broadcast, mac(1), 0x0800, 1000))
		if i%32 == 31 {
			s.pump()
			received += len(b.recv(t))
		}
	}
	s.pump()
	received += len(b.recv(t))
	if received != 20000 {
		t.Fatalf("b received %d of 20000 with stuck clients holding buffers (pool free %d)", received, s.e.pool.Free())
	}
}

func TestForwardingAllocatesNothing(t *testing.T) {
	for _, secureMode := range []bool{false, true} {
		s := newTestSwitch(t, secureMode, mactable.Config{}, nil)
		a, b, c := s.connect(), s.connect(), s.connect()
		frame := ipv4UDP(mac(2), mac(1), [4]byte{198, 18, 0, 10}, [4]byte{198, 18, 0, 20})
		b.send(t, ipv4UDP(broadcast, mac(2), [4]byte{198, 18, 0, 20}, [4]byte{198, 18, 255, 255}))
		s.pump()
		a.recv(t)
		c.recv(t)
		buf := make([]byte, 2048)
		allocs := testing.AllocsPerRun(500, func() {
			unix.Write(a.fd, frame)
			s.l.step(0)
			unix.Read(b.fd, buf)
		})
		if allocs != 0 {
			t.Fatalf("secure=%v: forwarding allocates %.1f times per frame", secureMode, allocs)
		}
		if b.port.cnt.txFrames < 500 {
			t.Fatalf("secure=%v: only %d frames reached b", secureMode, b.port.cnt.txFrames)
		}
		runt := []byte{}
		floods := testing.AllocsPerRun(200, func() {
			unix.Write(a.fd, runt) // an empty message is a runt
			s.l.step(0)
		})
		if floods != 0 {
			t.Fatalf("secure=%v: runt path allocates %.1f", secureMode, floods)
		}
	}
}

// ipv4UDP builds a minimal valid IPv4/UDP frame: 60 bytes, the Ethernet minimum.
func ipv4UDP(dst, src [6]byte, sip, dip [4]byte) []byte {
	return testbed.IPv4UDP(src, dst, netip.AddrFrom4(sip), netip.AddrFrom4(dip), 4000, 5000, make([]byte, 18))
}

// dialSeqpacket connects a blocking SEQPACKET client to path whose reads
// give up after timeout, so a frame that never comes fails the test.
func dialSeqpacket(t *testing.T, path string, timeout time.Duration) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(timeout))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return fd
}

// The real loop: a listener, clients that connect, Stats, Stop.
func TestRunAcceptsForwardsAndStops(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sock")
	lfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(lfd)
	if err := unix.Bind(lfd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(lfd, 16); err != nil {
		t.Fatal(err)
	}
	policy, _ := secure.New(secure.Config{})
	e, err := New(Config{TapFd: -1, MTU: 1500, Policy: policy, Logger: quietLogger(),
		MACTable:  mactable.Config{Capacity: 64, PortLimit: 8, MaxAge: time.Minute},
		Listeners: []Listener{{Fd: lfd, Kind: Seqpacket, Path: path}}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run() }()

	a, b := dialSeqpacket(t, path, 5*time.Second), dialSeqpacket(t, path, 5*time.Second)
	defer unix.Close(a)
	defer unix.Close(b)
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 2 })

	f := ethFrame(broadcast, mac(1), 0x0800, 300)
	if _, err := unix.Write(a, f); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	n, err := unix.Read(b, buf)
	if err != nil || !bytes.Equal(buf[:n], f) {
		t.Fatalf("b read %d bytes, err %v", n, err)
	}
	st, err := e.Stats()
	if err != nil || st.MACs != 1 || st.Accepted != 2 {
		t.Fatalf("stats %+v err %v", st, err)
	}
	if n, err := e.FlushMACs(); err != nil || n != 1 {
		t.Fatalf("FlushMACs = %d, %v", n, err)
	}
	e.Stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after Stop")
	}
	// Clients were closed: a read sees end of stream.
	if n, err := unix.Read(a, buf); n != 0 || err != nil {
		t.Fatalf("client still connected after Stop: n=%d err=%v", n, err)
	}
	if _, err := e.Stats(); err != ErrStopped {
		t.Fatalf("Stats after stop: %v", err)
	}
	e.Stop() // harmless twice
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func macKey(b byte) uint64 { m := mac(b); return mactable.Key(m[:]) }

// Paused VMs do not read. However many there are, and however traffic is
// spread over them, the pool keeps a reserve and the switch keeps reading:
// a few stuck clients with deep queues and a hundred with shallow ones
// must not exhaust it (an earlier rule, pressure at a quarter of the pool,
// let exactly this pattern take every buffer).
func TestManyStuckClientsNeverExhaustThePool(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{Capacity: 1024, PortLimit: 4}, func(c *Config) {
		c.MaxClients = 128
		c.Buffers = 1 // raised to the minimum the guarantee needs
	})
	a, b := s.connect(), s.connect()
	var stuck []*testClient
	for i := 0; i < 117; i++ {
		c := s.connect()
		// The kernel would absorb a megabyte per client first; make the
		// queues fill at once.
		unix.SetsockoptInt(c.port.fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
		stuck = append(stuck, c)
	}
	check := func() {
		t.Helper()
		if free := s.e.pool.Free(); free < s.e.cfg.Batch {
			t.Fatalf("pool down to %d free buffers of %d: reading would stop", free, s.e.pool.Cap())
		}
	}
	// Every stuck client announces its MAC (unicast to b, so the stuck
	// ones' queues stay empty until the test fills them on purpose).
	for i, c := range stuck {
		c.send(t, ethFrame(mac(2), [6]byte{0x02, 1, 0, 0, 0, byte(i)}, 0x0800, 60))
	}
	b.send(t, ethFrame(broadcast, mac(2), 0x0800, 60))
	s.pump()
	b.recv(t)
	base := b.port.cnt.txFrames
	toB := 0
	sent := 0
	send := func(dst [6]byte) {
		a.send(t, ethFrame(dst, mac(1), 0x0800, 200))
		if sent++; sent%16 == 0 {
			// A client that keeps up gets whole batches even now.
			for k := 0; k < s.e.cfg.Batch; k++ {
				a.send(t, ethFrame(mac(2), mac(1), 0x0800, 100))
				toB++
			}
			s.pump()
			check()
			if got := len(b.recv(t)); got != s.e.cfg.Batch {
				t.Fatalf("b received %d of a batch of %d while clients were stuck (pool free %d)", got, s.e.cfg.Batch, s.e.pool.Free())
			}
		}
	}
	for i := 0; i < 14; i++ { // deep queues
		for j := 0; j < 300; j++ {
			send([6]byte{0x02, 1, 0, 0, 0, byte(i)})
		}
	}
	for j := 0; j < 20; j++ { // then shallow ones, round robin
		for i := 14; i < len(stuck); i++ {
			send([6]byte{0x02, 1, 0, 0, 0, byte(i)})
		}
	}
	s.pump()
	check()
	if b.port.cnt.txFrames-base != uint64(toB) || b.port.cnt.drops != ([numDrops]uint64{}) {
		t.Fatalf("b: sent %d of %d, drops %v", b.port.cnt.txFrames-base, toB, b.port.cnt.drops)
	}
	var pressure uint64
	for _, c := range stuck {
		pressure += c.port.cnt.drops[DropPoolPressure]
	}
	if pressure == 0 {
		t.Fatal("no pool-pressure drops: the test did not reach the pool's limit")
	}
}

// A client that sends and then closes at once must have its frames
// delivered even when the switch, with frames queued for it, finds out
// about the close on the sending side first (EPIPE) (issue 7, finding 4).
func TestFramesSentBeforeCloseAreDelivered(t *testing.T) {
	for _, unread := range []bool{false, true} {
		s := newTestSwitch(t, false, mactable.Config{}, nil)
		a, b, c := s.connect(), s.connect(), s.connect()
		if unread {
			// c leaves a frame of ours unread when it closes: its socket
			// then reports ECONNRESET before the frames it sent.
			a.send(t, ethFrame(broadcast, mac(1), 0x0800, 60))
			s.pump()
			drainFrames(t, b.fd)
		}
		// a's broadcast comes first in the loop (epoll reports fds in the
		// order they became ready) and fails on c's socket.
		a.send(t, ethFrame(broadcast, mac(1), 0x0800, 61))
		last := ethFrame(mac(2), mac(3), 0x0800, 100)
		c.send(t, last)
		c.close()
		s.pump()
		got := b.recv(t)
		if len(got) != 2 || !bytes.Equal(got[1], last) {
			t.Fatalf("unread=%v: b received %d frames, want a's broadcast and c's last frame", unread, len(got))
		}
		if !c.port.dead {
			t.Fatalf("unread=%v: c's port is still open after end of stream", unread)
		}
		if !c.port.txClosed {
			t.Fatalf("unread=%v: sending to c did not fail first, the test missed its case", unread)
		}
	}
}

// A client looping on connect and close, or flooding refused frames,
// cannot write a line per attempt: the log is braked and says how much it
// held back (issue 7, finding 5).
func TestClientTriggeredLogLinesAreBraked(t *testing.T) {
	var logBuf bytes.Buffer
	s := newTestSwitch(t, true, mactable.Config{}, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logBuf, nil))
		c.MaxClients = 64
	})
	const cycles = 500
	for i := 0; i < cycles; i++ {
		c := s.connect()
		c.close()
		s.pump()
	}
	// Spoofed frames from many ports: the per-port limit alone would let
	// one line per port through.
	for i := 0; i < 60; i++ {
		c := s.connect()
		for j := 0; j < 5; j++ {
			c.send(t, ethFrame(broadcast, broadcast, 0x0800, 60)) // multicast source: refused
		}
	}
	s.pump()
	count := map[string]int{}
	for _, line := range strings.Split(logBuf.String(), "\n") {
		for _, msg := range []string{"client connected", "client disconnected", "frame dropped"} {
			if strings.Contains(line, `msg="`+msg+`"`) {
				count[msg]++
			}
		}
	}
	for msg, n := range count {
		if n > 40 {
			t.Errorf("%d attempts wrote %d %q lines; want the burst (32) and a trickle", cycles, n, msg)
		}
	}
	if count["client connected"] == 0 || count["frame dropped"] == 0 {
		t.Fatalf("the braked lines must still be written at first: %v", count)
	}
}

// connectAs connects a client and files it under uid, as SO_PEERCRED would
// for a client of that user (the socketpair's peer is always us).
func (s *testSwitch) connectAs(uid int32) *testClient {
	c := s.connect()
	s.e.leaveUser(c.port)
	c.port.uid = uid
	if err := s.e.userRoom(uid); err != nil {
		s.t.Fatal(err)
	}
	s.e.joinUser(c.port)
	return c
}

// One user's many connections cannot fill the MAC table for everyone, and
// a MAC the switch could not learn does not speak, so no unicast is ever
// flooded to an attacker for it (issue 7, finding 3).
func TestOneUserCannotStarveAnotherOfLearning(t *testing.T) {
	s := newTestSwitch(t, true, mactable.Config{Capacity: 48, PortLimit: 16, OwnerLimit: 24}, nil)
	const attacker, victim = 4242, 4343
	var attackers []*testClient
	// The attack of finding 3: ports of one user, each sending from as many
	// MACs as it may, with frames secure mode passes and that bind nothing.
	for i := 0; i < 3; i++ {
		c := s.connectAs(attacker)
		attackers = append(attackers, c)
		for m := 0; m < 16; m++ {
			c.send(t, ethFrame(broadcast, [6]byte{0x02, 0xaa, 0, 0, byte(i), byte(m)}, 0x88b5, 60))
		}
	}
	s.pump()
	if got := s.e.macs.OwnerLen(s.e.users.byUID[attacker].slot); got != 24 {
		t.Fatalf("the attacker's user holds %d MACs, want --user-macs (24)", got)
	}
	var refused uint64
	for _, c := range attackers {
		refused += c.port.cnt.drops[DropUserMACLimit]
		if c.port.cnt.unlearned != 0 {
			t.Fatalf("secure mode forwarded %d frames from MACs it did not learn", c.port.cnt.unlearned)
		}
	}
	if refused != 3*16-24 {
		t.Fatalf("user-mac-limit drops = %d, want %d", refused, 3*16-24)
	}
	for _, c := range attackers {
		c.recv(t)
	}
	// The victim's VMs arrive afterwards, are learned, and their unicast
	// reaches only each other.
	a, b := s.connectAs(victim), s.connectAs(victim)
	a.send(t, ethFrame(broadcast, mac(0xa), 0x88b5, 60))
	b.send(t, ethFrame(broadcast, mac(0xb), 0x88b5, 60))
	s.pump()
	a.recv(t)
	b.recv(t)
	for _, c := range attackers {
		c.recv(t)
	}
	uni := ethFrame(mac(0xb), mac(0xa), 0x88b5, 80)
	a.send(t, uni)
	s.pump()
	expectFrames(t, "b", b.recv(t), uni)
	for i, c := range attackers {
		expectFrames(t, fmt.Sprintf("attacker port %d", i), c.recv(t))
	}

	// A second attacking user fills the rest of the table. A MAC that can
	// no longer be learned is refused, not forwarded unlearned: the victim
	// user's new VM stays mute rather than having its traffic flooded.
	for i := 0; i < 2; i++ {
		c := s.connectAs(attacker + 1)
		for m := 0; m < 16; m++ {
			c.send(t, ethFrame(broadcast, [6]byte{0x02, 0xbb, 0, 0, byte(i), byte(m)}, 0x88b5, 60))
		}
	}
	s.pump()
	for _, c := range attackers {
		c.recv(t) // the second attacker's broadcasts
	}
	late := s.connectAs(victim)
	late.send(t, ethFrame(broadcast, mac(0xc), 0x88b5, 60))
	s.pump()
	if late.port.cnt.drops[DropMACTableFull] != 1 {
		t.Fatalf("a MAC the full table cannot learn: drops %v, want one mac-table-full", late.port.cnt.drops)
	}
	for i, c := range attackers {
		expectFrames(t, fmt.Sprintf("attacker port %d", i), c.recv(t))
	}
}

// --user-clients: one user cannot take every client slot.
func TestUserClientLimit(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, func(c *Config) { c.UserClients = 3 })
	for i := 0; i < 3; i++ {
		s.connect()
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if _, err := s.e.addClient(fds[1], Seqpacket, "test"); err == nil || !strings.Contains(err.Error(), "--user-clients") {
		t.Fatalf("a fourth client of the same user: err %v, want a refusal naming --user-clients", err)
	}
	if s.e.ports.clients != 3 {
		t.Fatalf("%d clients after the refusal", s.e.ports.clients)
	}
}

// dgramPeers is the clients map of the switch's datagram listener.
func (s *testSwitch) dgramPeers() map[string]*port {
	for i := range s.e.listeners {
		if l := &s.e.listeners[i]; l.dgram != nil {
			return l.dgram.peers
		}
	}
	s.t.Fatal("the switch has no datagram listener")
	return nil
}

// stats is Stats from a goroutine that may read every loop (tests, with
// the loops stopped between rounds).
func (e *Engine) stats() Stats {
	snaps := make([]loopStats, len(e.loops))
	for i, l := range e.loops {
		snaps[i] = l.snapshot()
	}
	s := e.switchStats()
	s.add(snaps)
	return s
}
