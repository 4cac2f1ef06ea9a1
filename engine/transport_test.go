package engine

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/mactable"
)

// connectStream adds a QEMU-style stream client over a socketpair.
func (s *testSwitch) connectStream() *testClient {
	s.t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		s.t.Fatal(err)
	}
	unix.SetNonblock(fds[1], true)
	p, err := s.e.addClient(fds[1], Stream, "test")
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { unix.Close(fds[0]) })
	return &testClient{fd: fds[0], port: p}
}

func prefixed(frames ...[]byte) []byte {
	var b []byte
	for _, f := range frames {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// readStreamFrames parses every complete prefixed frame waiting on fd and
// insists nothing is left over.
func readStreamFrames(t *testing.T, fd int) [][]byte {
	t.Helper()
	var rest []byte
	out := readStreamInto(t, fd, &rest)
	if len(rest) != 0 {
		t.Fatalf("%d stray bytes after the last frame", len(rest))
	}
	return out
}

// readStreamInto parses the complete frames of what is in *rest plus what
// waits on fd, leaving a trailing partial frame in *rest.
func readStreamInto(t *testing.T, fd int, rest *[]byte) [][]byte {
	t.Helper()
	data := *rest
	buf := make([]byte, 1<<16)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EAGAIN || n == 0 {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, buf[:n]...)
	}
	var out [][]byte
	for len(data) >= 4 {
		l := int(binary.BigEndian.Uint32(data))
		if len(data) < 4+l {
			break
		}
		out = append(out, data[4:4+l])
		data = data[4+l:]
	}
	*rest = data
	return out
}

func TestStreamClientFramingBothWays(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, nil)
	q := s.connectStream()
	unix.SetNonblock(q.fd, true)
	a := s.connect()

	f1 := ethFrame(broadcast, mac(7), 0x0800, 60)
	f2 := ethFrame(mac(1), mac(7), 0x0800, 1514)
	f3 := ethFrame(broadcast, mac(7), 0x0806, 42)
	wire := prefixed(f1, f2, f3)
	// Bytes arrive in awkward pieces: inside a prefix, inside a frame, and
	// several frames in one write.
	for _, cut := range [][2]int{{0, 2}, {2, 40}, {40, len(wire)}} {
		if _, err := unix.Write(q.fd, wire[cut[0]:cut[1]]); err != nil {
			t.Fatal(err)
		}
		s.pump()
	}
	expectFrames(t, "seqpacket client", a.recv(t), f1, f2, f3)

	back := ethFrame(mac(7), mac(1), 0x0800, 300)
	a.send(t, back)
	s.pump()
	got := readStreamFrames(t, q.fd)
	if len(got) != 1 || !bytes.Equal(got[0], back) {
		t.Fatalf("stream client got %d frames", len(got))
	}
}

// More complete frames than one read batch holds, all in one write: the
// ones left in the buffer must be forwarded without any new data arriving.
func TestStreamBufferedFramesAreNotStranded(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, func(c *Config) { c.Batch = 4 })
	q := s.connectStream()
	a := s.connect()
	var frames [][]byte
	for i := 0; i < 19; i++ {
		f := ethFrame(broadcast, mac(7), 0x0800, 60)
		f[20] = byte(i)
		frames = append(frames, f)
	}
	unix.Write(q.fd, prefixed(frames...))
	s.l.receive(q.port) // what one poll report does
	if len(s.l.readNext) == 0 {
		t.Fatal("a stream port with buffered frames was not queued for another pass")
	}
	s.pump()
	expectFrames(t, "a", a.recv(t), frames...)
}

func TestStreamBadLengthClosesOnlyThatClient(t *testing.T) {
	for _, length := range []uint32{0, 1500 + 18 + 1, 1 << 30} {
		s := newTestSwitch(t, false, mactable.Config{}, nil)
		q := s.connectStream()
		a, b := s.connect(), s.connect()
		var bad [4]byte
		binary.BigEndian.PutUint32(bad[:], length)
		unix.Write(q.fd, append(prefixed(ethFrame(broadcast, mac(7), 0x0800, 60)), bad[:]...))
		s.pump()
		if !q.port.dead || s.e.ports.get(q.port.id) != nil {
			t.Fatalf("length %d: stream client not closed", length)
		}
		if q.port.cnt.drops[DropBadLength] != 1 {
			t.Fatalf("length %d: bad-length not counted", length)
		}
		if len(a.recv(t)) != 1 || len(b.recv(t)) != 1 {
			t.Fatalf("length %d: the good frame before the bad length was lost", length)
		}
		a.send(t, ethFrame(broadcast, mac(1), 0x0800, 60))
		s.pump()
		if len(b.recv(t)) != 1 {
			t.Fatalf("length %d: switch stopped forwarding for others", length)
		}
	}
}

// Short writes: a stream client that reads slowly gets every frame whole
// and in order once it catches up.
func TestStreamShortWritesResume(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, func(c *Config) { c.QueueLen = 4096 })
	q := s.connectStream()
	unix.SetsockoptInt(q.port.fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
	unix.SetsockoptInt(q.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4096)
	unix.SetNonblock(q.fd, true)
	a := s.connect()
	var want [][]byte
	for i := 0; i < 300; i++ {
		f := ethFrame(broadcast, mac(1), 0x0800, 200+i)
		binary.BigEndian.PutUint32(f[14:], uint32(i))
		want = append(want, f)
		a.send(t, f)
		if i%50 == 49 {
			s.pump()
		}
	}
	s.pump()
	if !q.port.writeArmed {
		t.Fatal("the stream client's backlog did not arm write readiness")
	}
	var got [][]byte
	var rest []byte
	for i := 0; i < 1000 && len(got) < len(want); i++ {
		got = append(got, readStreamInto(t, q.fd, &rest)...)
		s.pump()
	}
	if len(rest) != 0 {
		t.Fatalf("%d stray bytes after the last frame", len(rest))
	}
	expectFrames(t, "slow stream client", got, want...)
}

type dgramClient struct {
	fd   int
	path string
}

func newDgramSwitch(t *testing.T) (*testSwitch, string) {
	return newDgramSwitchWith(t, false, nil)
}

// newDgramSwitchWith is newDgramSwitch in secure mode or not, logging to
// logw when it is not nil.
func newDgramSwitchWith(t *testing.T, secureMode bool, logw io.Writer) (*testSwitch, string) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dgram")
	lfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(lfd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(lfd) })
	s := newTestSwitch(t, secureMode, mactable.Config{}, func(c *Config) {
		c.Listeners = []Listener{{Fd: lfd, Kind: Dgram, Path: path}}
		c.DgramIdle = 10 * time.Second
		if logw != nil {
			c.Logger = slog.New(slog.NewTextHandler(logw, nil))
		}
	})
	return s, path
}

func dialDgram(t *testing.T, dir string, name string, connectTo string) *dgramClient {
	t.Helper()
	path := filepath.Join(dir, name)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if connectTo != "" {
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: connectTo}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &dgramClient{fd: fd, path: path}
}

func (c *dgramClient) sendTo(t *testing.T, to string, frame []byte) {
	t.Helper()
	if err := unix.Sendto(c.fd, frame, 0, &unix.SockaddrUnix{Name: to}); err != nil {
		t.Fatal(err)
	}
}

func (c *dgramClient) recv(t *testing.T) [][]byte {
	t.Helper()
	return drainFrames(t, c.fd)
}

func TestDgramClientsKeyedBySourcePath(t *testing.T) {
	s, lpath := newDgramSwitch(t)
	dir := t.TempDir()
	vm1 := dialDgram(t, dir, "vm1.sock", "")
	vm2 := dialDgram(t, dir, "vm2.sock", lpath) // connected, like vfkit
	a := s.connect()

	vm1.sendTo(t, lpath, vfkitHello[:]) // swallowed, but makes the client known
	hello := ethFrame(broadcast, mac(0x11), 0x0806, 60)
	vm1.sendTo(t, lpath, hello)
	s.pump()
	expectFrames(t, "seqpacket client", a.recv(t), hello)
	if s.e.ports.clients != 2 || s.dgramPeers()[vm1.path] == nil {
		t.Fatalf("clients %d, vm1 known %v", s.e.ports.clients, s.dgramPeers()[vm1.path] != nil)
	}
	if s.dgramPeers()[vm1.path].dgram.via != nil {
		t.Fatal("an unconnected client should get its own sending socket")
	}
	f2 := ethFrame(broadcast, mac(0x12), 0x0806, 60)
	if _, err := unix.Write(vm2.fd, f2); err != nil {
		t.Fatal(err)
	}
	s.pump()
	expectFrames(t, "vm1 (flood from vm2)", vm1.recv(t), f2)
	expectFrames(t, "seqpacket client", a.recv(t), f2)
	// Unicast back to each, learned.
	to1 := ethFrame(mac(0x11), mac(1), 0x0800, 100)
	to2 := ethFrame(mac(0x12), mac(1), 0x0800, 100)
	a.send(t, to1)
	a.send(t, to2)
	s.pump()
	expectFrames(t, "vm1", vm1.recv(t), to1)
	expectFrames(t, "vm2", vm2.recv(t), to2)
	if p := s.dgramPeers()[vm2.path]; p == nil || p.dgram.via == nil {
		t.Fatal("a client connected to the listener must be answered through it")
	}
}

func TestDgramClientsExpireAndDepart(t *testing.T) {
	s, lpath := newDgramSwitch(t)
	dir := t.TempDir()
	vm1 := dialDgram(t, dir, "vm1.sock", "")
	vm2 := dialDgram(t, dir, "vm2.sock", "")
	vm1.sendTo(t, lpath, ethFrame(broadcast, mac(0x11), 0x0800, 60))
	vm2.sendTo(t, lpath, ethFrame(broadcast, mac(0x12), 0x0800, 60))
	s.pump()
	vm1.recv(t)
	vm2.recv(t)
	// vm2 keeps talking, vm1 falls silent past --dgram-idle.
	s.advance(6 * time.Second)
	vm2.sendTo(t, lpath, ethFrame(broadcast, mac(0x12), 0x0800, 60))
	s.pump()
	s.advance(6 * time.Second)
	s.l.sweep()
	s.l.reap()
	if s.dgramPeers()[vm1.path] != nil || s.dgramPeers()[vm2.path] == nil {
		t.Fatalf("after idle: vm1 known %v (want false), vm2 known %v (want true)",
			s.dgramPeers()[vm1.path] != nil, s.dgramPeers()[vm2.path] != nil)
	}
	if _, ok := s.e.macs.Lookup(macKey(0x11), s.l.now); ok {
		t.Fatal("an expired datagram client's MAC outlived it")
	}
	// vm2's socket goes away: the next frame for it finds no one and the
	// client is forgotten at once.
	unix.Close(vm2.fd)
	a := s.connect()
	a.send(t, ethFrame(mac(0x12), mac(1), 0x0800, 60))
	s.pump()
	if s.dgramPeers()[vm2.path] != nil {
		t.Fatal("a datagram client whose socket is closed was not forgotten")
	}
}

func TestDgramBackPressureKeepsTheClient(t *testing.T) {
	s, lpath := newDgramSwitch(t)
	vm := dialDgram(t, t.TempDir(), "vm.sock", "")
	vm.sendTo(t, lpath, ethFrame(broadcast, mac(0x11), 0x0800, 60))
	a := s.connect()
	s.pump()
	// The VM stops reading; its receive queue fills (max_dgram_qlen).
	for i := 0; i < 2000; i++ {
		a.send(t, ethFrame(mac(0x11), mac(1), 0x0800, 1000))
		if i%32 == 31 {
			s.pump()
		}
	}
	s.pump()
	p := s.dgramPeers()[vm.path]
	if p == nil || p.dead {
		t.Fatal("a datagram client with a full queue was dropped")
	}
	if p.cnt.drops[DropQueueFull] == 0 {
		t.Fatal("expected tx-queue-full drops for the stalled datagram client")
	}
	got := len(vm.recv(t))
	s.pump()
	got += len(vm.recv(t))
	if got == 0 {
		t.Fatal("the datagram client got nothing after catching up")
	}
}

func TestMonitorsSeeFloodsOrEverything(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sock")
	lfd, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	defer unix.Close(lfd)
	unix.Bind(lfd, &unix.SockaddrUnix{Name: path})
	unix.Listen(lfd, 8)
	s := newTestSwitch(t, false, mactable.Config{}, func(c *Config) {
		c.Listeners = []Listener{{Fd: lfd, Kind: Seqpacket, Path: path}}
	})
	done := make(chan error, 1)
	go func() { done <- s.e.Run() }()
	defer func() { s.e.Stop(); <-done }()

	pair := func() (mine, theirs int) {
		fds, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		unix.SetNonblock(fds[1], true)
		tv := unix.NsecToTimeval(int64(300 * time.Millisecond))
		unix.SetsockoptTimeval(fds[0], unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		return fds[0], fds[1]
	}
	floodMon, fm := pair()
	allMon, am := pair()
	defer unix.Close(floodMon)
	defer unix.Close(allMon)
	if _, err := s.e.AttachMonitor(fm, false, "floods"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.e.AttachMonitor(am, true, "all"); err != nil {
		t.Fatal(err)
	}
	a, b := dialSeqpacket(t, path, 2*time.Second), dialSeqpacket(t, path, 2*time.Second)
	defer unix.Close(a)
	defer unix.Close(b)
	buf := make([]byte, 2048)
	bcast := ethFrame(broadcast, mac(2), 0x0806, 60)
	unix.Write(b, bcast)
	if n, err := unix.Read(a, buf); err != nil || n != 60 {
		t.Fatalf("a: %d %v", n, err)
	}
	uni := ethFrame(mac(2), mac(1), 0x0800, 90)
	unix.Write(a, uni)
	if n, err := unix.Read(b, buf); err != nil || n != 90 {
		t.Fatalf("b: %d %v", n, err)
	}
	read := func(fd int) [][]byte {
		var out [][]byte
		for {
			n, err := unix.Read(fd, buf)
			if err != nil {
				return out
			}
			out = append(out, append([]byte(nil), buf[:n]...))
		}
	}
	expectFrames(t, "flood monitor", read(floodMon), bcast)
	expectFrames(t, "mirror monitor", read(allMon), bcast, uni)
	st, _ := s.e.Stats()
	if st.Clients != 2 {
		t.Fatalf("monitors counted as clients: %d", st.Clients)
	}
}

func TestListings(t *testing.T) {
	s := newTestSwitch(t, true, mactable.Config{}, nil)
	a := s.connect()
	b := s.connect()
	a.send(t, ipv4UDP(broadcast, mac(5), [4]byte{198, 18, 0, 5}, [4]byte{198, 18, 255, 255}))
	b.send(t, ipv4UDP(broadcast, mac(6), [4]byte{198, 18, 0, 6}, [4]byte{198, 18, 255, 255}))
	s.pump()
	done := make(chan error, 1)
	go func() { done <- s.e.Run() }()
	defer func() { s.e.Stop(); <-done }()
	macs, err := s.e.MACs()
	if err != nil || len(macs) != 2 || macs[0].MAC != mac(5) || macs[0].Port != a.port.id || macs[1].Kind != "seqpacket" {
		t.Fatalf("MACs = %+v, %v", macs, err)
	}
	bs, err := s.e.Bindings()
	if err != nil || len(bs) != 2 || bs[0].IP.String() != "198.18.0.5" || bs[0].MAC != mac(5) || bs[1].Port != b.port.id {
		t.Fatalf("Bindings = %+v, %v", bs, err)
	}
}

// A client answered through the listener (it connected its socket to it)
// that stops reading is retried on a timer, and gets its frames once it
// reads again; it is never dropped.
func TestDgramViaListenerRetriesAfterBackPressure(t *testing.T) {
	s, lpath := newDgramSwitch(t)
	vm := dialDgram(t, t.TempDir(), "vm.sock", lpath)
	if _, err := unix.Write(vm.fd, ethFrame(broadcast, mac(0x11), 0x0800, 60)); err != nil {
		t.Fatal(err)
	}
	a := s.connect()
	s.pump()
	a.recv(t)
	sent := 0
	for i := 0; i < 200; i++ {
		a.send(t, ethFrame(mac(0x11), mac(1), 0x0800, 500))
		sent++
		if i%32 == 31 {
			s.pump()
		}
	}
	s.pump()
	p := s.dgramPeers()[vm.path]
	if p == nil || p.dgram.via == nil {
		t.Fatal("the connected client is not answered through the listener")
	}
	if p.txq.Len() == 0 || !s.l.retryPending {
		t.Fatalf("expected a backlog waiting on the retry timer: queued %d, retry pending %v", p.txq.Len(), s.l.retryPending)
	}
	got := 0
	for round := 0; round < 100 && got+int(p.cnt.drops[DropQueueFull]) < sent; round++ {
		got += len(vm.recv(t))
		s.advance(2 * time.Millisecond)
		s.pump()
	}
	got += len(vm.recv(t))
	if got+int(p.cnt.drops[DropQueueFull]) != sent || p.dead {
		t.Fatalf("received %d + dropped %d of %d (client dead: %v)", got, p.cnt.drops[DropQueueFull], sent, p.dead)
	}
	if got <= 10 {
		t.Fatalf("only %d frames arrived after the client caught up: the retry timer did not resend", got)
	}
}
