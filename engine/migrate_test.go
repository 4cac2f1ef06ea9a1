package engine

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/hang"
	"github.com/vknetd/vknetd/mactable"
	"github.com/vknetd/vknetd/secure"
)

// rarp is the announcement QEMU sends for a migrated VM: a RARP request
// (ethertype 0x8035, opcode 3) from and about the VM's MAC.
func rarp(src [6]byte) []byte {
	f := make([]byte, 60)
	copy(f[0:6], broadcast[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:14], 0x8035)
	copy(f[14:22], []byte{0, 1, 8, 0, 6, 4, 0, 3})
	copy(f[22:28], src[:])
	copy(f[32:38], src[:])
	return f
}

// garp is a gratuitous ARP request: the sender asks about its own address.
func garp(src [6]byte, ip [4]byte) []byte {
	f := make([]byte, 60)
	copy(f[0:6], broadcast[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:14], 0x0806)
	copy(f[14:22], []byte{0, 1, 8, 0, 6, 4, 0, 1})
	copy(f[22:28], src[:])
	copy(f[28:32], ip[:])
	copy(f[38:42], ip[:])
	return f
}

func TestAnnounces(t *testing.T) {
	ip := [4]byte{198, 18, 0, 5}
	notGratuitous := garp(mac(5), ip)
	copy(notGratuitous[38:42], []byte{198, 18, 0, 1})
	otherSender := garp(mac(5), ip)
	copy(otherSender[22:28], []byte{2, 0, 0, 0, 0, 9})
	for _, tc := range []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"rarp", rarp(mac(5)), true},
		{"gratuitous arp", garp(mac(5), ip), true},
		{"arp for another address", notGratuitous, false},
		{"arp whose sender is another mac", otherSender, false},
		{"ipv4", ipv4UDP(broadcast, mac(5), ip, [4]byte{198, 18, 255, 255}), false},
		{"short arp", garp(mac(5), ip)[:40], false},
		{"runt", rarp(mac(5))[:13], false},
	} {
		if got := announces(tc.frame); got != tc.want {
			t.Errorf("%s: announces = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// migrationSwitch is a secure switch whose log the test reads, with a
// third client (the host, say) that talks to the VM's MAC.
func migrationSwitch(t *testing.T, tweak func(*Config)) (*testSwitch, *bytes.Buffer) {
	var logBuf bytes.Buffer
	s := newTestSwitch(t, true, mactable.Config{}, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logBuf, nil))
		if tweak != nil {
			tweak(c)
		}
	})
	return s, &logBuf
}

var (
	vmIP    = [4]byte{198, 18, 0, 5}
	peerIP  = [4]byte{198, 18, 0, 9}
	vmBcast = [4]byte{198, 18, 255, 255}
)

// boundTo reports the port the VM's address is bound to, if any.
func boundTo(s *testSwitch, ip [4]byte) (uint32, bool) {
	var port uint32
	found := false
	s.e.policy.Bindings(func(b secure.Binding) {
		if b.IP.Is4() && b.IP.As4() == ip {
			port, found = b.Port, true
		}
	})
	return port, found
}

func macOn(s *testSwitch, b byte) uint32 {
	p, ok := s.e.macs.Lookup(macKey(b), s.l.now)
	if !ok {
		s.t.Fatalf("MAC %x is not in the table", mac(b))
	}
	return p
}

func movedLines(log *bytes.Buffer) []string {
	var out []string
	for _, line := range strings.Split(log.String(), "\n") {
		if strings.Contains(line, msgMACMoved) {
			out = append(out, line)
		}
	}
	return out
}

// The stream and dgram case: the source QEMU pauses (its port falls
// silent, its connection stays) and the destination's port announces the
// VM. Before moveSilence the announcement is refused as src-mac-in-use,
// as is any frame that is not an announcement; after it, the announcement
// moves the MAC, the VM's address binding, and the traffic for it, and the
// move is counted and logged once.
func TestMACMovesToSameUserPortAfterSilence(t *testing.T) {
	for _, announce := range []struct {
		name  string
		frame []byte
	}{{"rarp", rarp(mac(5))}, {"gratuitous arp", garp(mac(5), vmIP)}} {
		t.Run(announce.name, func(t *testing.T) {
			s, log := migrationSwitch(t, nil)
			src, dst, peer := s.connect(), s.connect(), s.connect()
			src.send(t, ipv4UDP(broadcast, mac(5), vmIP, vmBcast))
			peer.send(t, ipv4UDP(broadcast, mac(9), peerIP, vmBcast))
			s.pump()
			if port, ok := boundTo(s, vmIP); !ok || port != src.port.id {
				t.Fatalf("the VM's address is bound to port %d (%v), want the source's %d", port, ok, src.port.id)
			}

			// At once: the source speaks again just before, read in the
			// same round (so a machine that stalls the test between two
			// rounds for moveSilence does not make this a move).
			src.send(t, ipv4UDP(broadcast, mac(5), vmIP, vmBcast))
			dst.send(t, announce.frame)
			s.pump()
			if got := dst.port.cnt.drops[DropMACInUse]; got != 1 || macOn(s, 5) != src.port.id {
				t.Fatalf("an announcement right after the source spoke: src-mac-in-use %d, MAC on port %d; want refused", got, macOn(s, 5))
			}
			// After the silence, a frame that is not an announcement is
			// still refused.
			s.advance(moveSilence)
			dst.send(t, ipv4UDP(broadcast, mac(5), vmIP, vmBcast))
			s.pump()
			if got := dst.port.cnt.drops[DropMACInUse]; got != 2 || macOn(s, 5) != src.port.id {
				t.Fatalf("a plain frame after the silence: src-mac-in-use %d, MAC on port %d; want refused", got, macOn(s, 5))
			}
			if s.e.macMoves.Load() != 0 || len(movedLines(log)) != 0 {
				t.Fatalf("moves counted %d, logged %q before any move", s.e.macMoves.Load(), movedLines(log))
			}
			for _, c := range []*testClient{src, dst, peer} {
				c.recv(t)
			}

			s.advance(moveSilence)
			dst.send(t, announce.frame)
			s.pump()
			if got := macOn(s, 5); got != dst.port.id {
				t.Fatalf("after %v of silence the announcement left the MAC on port %d, want the destination's %d", 2*moveSilence, got, dst.port.id)
			}
			if port, ok := boundTo(s, vmIP); !ok || port != dst.port.id {
				t.Fatalf("the VM's address is bound to port %d (%v), want the destination's %d", port, ok, dst.port.id)
			}
			expectFrames(t, "peer", peer.recv(t), announce.frame)
			// The VM's frames from its address pass, and the peer's reach
			// it on its new port only.
			fromVM := ipv4UDP(mac(9), mac(5), vmIP, peerIP)
			dst.send(t, fromVM)
			toVM := ipv4UDP(mac(5), mac(9), peerIP, vmIP)
			s.pump()
			peer.send(t, toVM)
			s.pump()
			expectFrames(t, "peer", peer.recv(t), fromVM)
			expectFrames(t, "destination", dst.recv(t), toVM)
			// The source got the announcement, as every port did, and
			// nothing since.
			expectFrames(t, "source", src.recv(t), announce.frame)
			if dst.port.cnt.secureDrops != ([len(dst.port.cnt.secureDrops)]uint64{}) {
				t.Fatalf("the VM's frames were refused on its new port: %v", dst.port.cnt.secureDrops)
			}
			if s.e.macMoves.Load() != 1 {
				t.Fatalf("moves counted %d, want 1", s.e.macMoves.Load())
			}
			if st := s.e.stats(); st.MACMoves != 1 {
				t.Fatalf("Stats.MACMoves = %d, want 1", st.MACMoves)
			}
			lines := movedLines(log)
			if len(lines) != 1 || !strings.Contains(lines[0], "mac=02:00:00:00:00:05") ||
				!strings.Contains(lines[0], "bindings=1") || !strings.Contains(lines[0], movedSilent) {
				t.Fatalf("move log lines %q, want one naming the MAC, 1 binding and why", lines)
			}
			// The source, should it speak again, is now the one refused.
			src.send(t, ipv4UDP(broadcast, mac(5), vmIP, vmBcast))
			s.pump()
			if got := src.port.cnt.drops[DropMACInUse]; got != 1 {
				t.Fatalf("the old port's frame after the move: src-mac-in-use %d, want 1", got)
			}
		})
	}
}

// setUID makes p a port of uid, as if that user had connected it.
func setUID(s *testSwitch, p *port, uid int32) {
	s.e.macs.RemovePort(p.id)
	s.e.leaveUser(p)
	p.uid = uid
	s.e.joinUser(p)
}

// attachMemAs adds a port on a memTransport to loop l, connected by uid
// (attachMem's ports have no uid known: no port takes their MACs).
func (s *testSwitch) attachMemAs(l *loop, uid int32) *memPeer {
	m := s.attachMemTo(l)
	setUID(s, m.port, uid)
	return m
}

// Another user's port never takes the MAC, however long the source is
// silent and whatever it announces, nor when the source's device stopped.
func TestMACNeverMovesToAnotherUser(t *testing.T) {
	s, log := migrationSwitch(t, nil)
	src := s.attachMem()
	dst := s.connect()
	setUID(s, dst.port, 4242)
	src.send(ipv4UDP(broadcast, mac(5), vmIP, vmBcast))
	s.pump()
	s.advance(time.Second)
	dst.send(t, rarp(mac(5)))
	dst.send(t, garp(mac(5), vmIP))
	s.pump()
	src.t.stopped = true
	src.ring()
	s.pump()
	dst.send(t, rarp(mac(5)))
	dst.send(t, ipv4UDP(broadcast, mac(5), vmIP, vmBcast))
	s.pump()
	if got := macOn(s, 5); got != src.port.id {
		t.Fatalf("another user's port took the MAC: on port %d", got)
	}
	if port, _ := boundTo(s, vmIP); port != src.port.id {
		t.Fatalf("another user's port took the address: bound to port %d", port)
	}
	if got := dst.port.cnt.drops[DropMACInUse]; got != 4 {
		t.Fatalf("src-mac-in-use %d, want all 4 frames", got)
	}
	if s.e.macMoves.Load() != 0 || len(movedLines(log)) != 0 {
		t.Fatalf("moves counted %d, logged %q", s.e.macMoves.Load(), movedLines(log))
	}
}

// vhost-user: QEMU stops the source's device (GET_VRING_BASE) at the
// switch-over. From then on any frame of the VM's from its user's new port
// moves the MAC at once, announcement or not, silence or not.
func TestMACMovesAtOnceFromAStoppedDevice(t *testing.T) {
	s, log := migrationSwitch(t, nil)
	src, dst := s.attachMemAs(s.l, 1000), s.attachMemAs(s.l, 1000)
	src.send(ipv4UDP(broadcast, mac(5), vmIP, vmBcast))
	s.pump()
	fromVM := ipv4UDP(broadcast, mac(5), vmIP, vmBcast)
	dst.send(fromVM)
	s.pump()
	if got := dst.port.cnt.drops[DropMACInUse]; got != 1 {
		t.Fatalf("before the stop: src-mac-in-use %d, want 1", got)
	}
	src.t.stopped = true
	src.ring()
	s.pump()
	if !src.port.left.stopped.Load() {
		t.Fatal("the port did not take the stop from its readiness")
	}
	dst.send(fromVM)
	s.pump()
	if got := macOn(s, 5); got != dst.port.id {
		t.Fatalf("a frame after the source's device stopped left the MAC on port %d", got)
	}
	if port, _ := boundTo(s, vmIP); port != dst.port.id {
		t.Fatalf("the address is bound to port %d, want the destination's", port)
	}
	if dst.port.cnt.drops[DropMACInUse] != 1 || dst.port.cnt.secureDrops != ([len(dst.port.cnt.secureDrops)]uint64{}) {
		t.Fatalf("the frame after the stop was refused: %v %v", dst.port.cnt.drops, dst.port.cnt.secureDrops)
	}
	if lines := movedLines(log); s.e.macMoves.Load() != 1 || len(lines) != 1 || !strings.Contains(lines[0], movedStopped) {
		t.Fatalf("moves counted %d, logged %q", s.e.macMoves.Load(), lines)
	}
}

// The source's connection closes (QEMU quit) while the destination's
// frame waits in the same round: the closing port no longer holds the VM.
func TestMACMovesFromAClosingPort(t *testing.T) {
	s, _ := migrationSwitch(t, nil)
	src, dst := s.connect(), s.connect()
	src.send(t, ipv4UDP(broadcast, mac(5), vmIP, vmBcast))
	s.pump()
	s.l.kill(src.port, nil) // hung up; reaped at the end of the round
	dst.send(t, ipv4UDP(broadcast, mac(5), vmIP, vmBcast))
	s.l.receive(dst.port)
	if got := macOn(s, 5); got != dst.port.id || dst.port.cnt.drops[DropMACInUse] != 0 {
		t.Fatalf("the MAC is on port %d (src-mac-in-use %d), want the destination's", got, dst.port.cnt.drops[DropMACInUse])
	}
	if port, _ := boundTo(s, vmIP); port != dst.port.id {
		t.Fatalf("the address is bound to port %d, want the destination's", port)
	}
	s.pump()
	// Gone: nothing of it is left to take.
	if port, _ := boundTo(s, vmIP); port != dst.port.id || macOn(s, 5) != dst.port.id {
		t.Fatalf("after the source was reaped the VM is on port %d, bound to %d", macOn(s, 5), port)
	}
}

// Across hosts (--vxlan): the VM leaves for another host, whose switch
// sends its announcement through the TAP. The TAP takes the MAC from the
// silent local port, the local bindings end, and local peers reach the VM
// through the TAP; when the VM comes back to a new local port and
// announces itself after falling silent on the TAP's side, the port takes
// it back.
func TestMACMovesAcrossHosts(t *testing.T) {
	var host int
	s, log := migrationSwitch(t, func(c *Config) { host = withTap(t, c) })
	src, peer := s.connect(), s.connect()
	src.send(t, ipv4UDP(broadcast, mac(5), vmIP, vmBcast))
	peer.send(t, ipv4UDP(broadcast, mac(9), peerIP, vmBcast))
	s.pump()
	drainFrames(t, host)
	src.recv(t)
	peer.recv(t)

	writeFrame(t, host, rarp(mac(5)))
	s.pump()
	if got := s.e.ports.get(0).cnt.drops[DropRemoteMACConflict]; got != 1 || macOn(s, 5) != src.port.id {
		t.Fatalf("the host's side announced a live client's MAC: remote-mac-conflict %d, MAC on port %d; want refused", got, macOn(s, 5))
	}
	s.advance(moveSilence)
	writeFrame(t, host, ethFrame(broadcast, mac(5), 0x0800, 60))
	s.pump()
	if got := s.e.ports.get(0).cnt.drops[DropRemoteMACConflict]; got != 2 {
		t.Fatalf("a plain frame from the host's side after the silence: remote-mac-conflict %d, want 2", got)
	}
	writeFrame(t, host, rarp(mac(5)))
	s.pump()
	if got := macOn(s, 5); got != 0 {
		t.Fatalf("the announcement from the host's side after the silence left the MAC on port %d", got)
	}
	if port, ok := boundTo(s, vmIP); ok {
		t.Fatalf("the VM's address is still bound to port %d after it left the host", port)
	}
	expectFrames(t, "peer", peer.recv(t), rarp(mac(5)))
	toVM := ipv4UDP(mac(5), mac(9), peerIP, vmIP)
	peer.send(t, toVM)
	s.pump()
	expectFrames(t, "the host's side", drainFrames(t, host), toVM)
	expectFrames(t, "source", src.recv(t), rarp(mac(5)))

	// Back to a new local port of any user: the TAP has no user.
	dst := s.connect()
	setUID(s, dst.port, 4242)
	writeFrame(t, host, ethFrame(broadcast, mac(5), 0x0800, 60))
	s.pump()
	dst.send(t, rarp(mac(5)))
	s.pump()
	if got := dst.port.cnt.drops[DropMACInUse]; got != 1 || macOn(s, 5) != 0 {
		t.Fatalf("a local announcement of a MAC the host's side just used: src-mac-in-use %d, MAC on port %d", got, macOn(s, 5))
	}
	s.advance(moveSilence)
	dst.send(t, rarp(mac(5)))
	s.pump()
	if got := macOn(s, 5); got != dst.port.id {
		t.Fatalf("the VM back on this host is on port %d, want %d", got, dst.port.id)
	}
	dst.send(t, ipv4UDP(broadcast, mac(5), vmIP, vmBcast))
	s.pump()
	if port, _ := boundTo(s, vmIP); port != dst.port.id {
		t.Fatalf("the VM's address is bound to port %d, want %d", port, dst.port.id)
	}
	if lines := movedLines(log); s.e.macMoves.Load() != 2 || len(lines) != 2 ||
		!strings.Contains(lines[0], movedSilent) || !strings.Contains(lines[1], movedRemote) {
		t.Fatalf("moves counted %d, logged %q", s.e.macMoves.Load(), lines)
	}
}

// onLoop runs fn on l's goroutine while the engine runs (Run): the test
// touches a loop's ports and their peers only there.
func onLoop(t *testing.T, l *loop, fn func()) {
	t.Helper()
	if err := l.do(fn); err != nil {
		t.Fatal(err)
	}
}

// macPorts is where the MAC table has each MAC, and boundPorts where the
// bindings have each IPv4 address, from the listings.
func macPorts(t *testing.T, e *Engine) map[[6]byte]uint32 {
	t.Helper()
	ms, err := e.MACs()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[[6]byte]uint32)
	for _, m := range ms {
		out[m.MAC] = m.Port
	}
	return out
}

func boundPorts(t *testing.T, e *Engine) map[[4]byte]uint32 {
	t.Helper()
	bs, err := e.Bindings()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[[4]byte]uint32)
	for _, b := range bs {
		if b.IP.Is4() {
			out[b.IP.As4()] = b.Port
		}
	}
	return out
}

// With --workers the old port may be another loop's than the new one:
// VMs move both ways between ports of two loops running at once, on the
// stop of their devices, on an announcement after silence while the old
// port's loop kept hearing the VM until then, and between a client of
// the second loop and the TAP (the first loop's). Each MAC and its
// bindings end on the right port, and mac_moves counts every move
// exactly once. Under -race this fails when a loop reads the old port's
// state, or counts a move, without atomics.
func TestWorkersMACMovesBetweenLoops(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	var host int
	s, _ := migrationSwitch(t, func(c *Config) { host = withTap(t, c); c.Workers = 2 })
	e := s.e
	l0, l1 := e.loops[0], e.loops[1]
	runErr := make(chan error, 1)
	go func() { runErr <- e.Run() }()
	defer func() {
		e.Stop()
		if err := <-runErr; err != nil {
			t.Error(err)
		}
	}()
	attach := func(l *loop) (m *memPeer) {
		onLoop(t, l, func() { m = s.attachMemAs(l, 1000) })
		return m
	}
	send := func(l *loop, m *memPeer, frames ...[]byte) {
		onLoop(t, l, func() { m.send(frames...); m.ring() })
	}
	stop := func(l *loop, m *memPeer) {
		onLoop(t, l, func() { m.t.stopped = true; m.ring() })
		waitFor(t, func() (ok bool) { onLoop(t, l, func() { ok = m.port.left.stopped.Load() }); return ok })
	}
	moves := func() uint64 {
		st, err := e.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return st.MACMoves
	}
	ipOf := func(b byte) [4]byte { return [4]byte{198, 18, 0, b} }
	vmFrames := func(first, n byte) (fs [][]byte) {
		for b := first; b < first+n; b++ {
			fs = append(fs, ipv4UDP(broadcast, mac(b), ipOf(b), vmBcast))
		}
		return fs
	}

	// Ten VMs on each loop move to the other loop at once, their sources'
	// devices stopped.
	a0, a1, b0, b1 := attach(l0), attach(l1), attach(l0), attach(l1)
	send(l0, a0, vmFrames(10, 10)...)
	send(l1, a1, vmFrames(20, 10)...)
	waitFor(t, func() bool { return len(boundPorts(t, e)) == 20 })
	stop(l0, a0)
	stop(l1, a1)
	send(l1, b1, vmFrames(10, 10)...)
	send(l0, b0, vmFrames(20, 10)...)
	waitFor(t, func() bool { return moves() >= 20 })
	macs, bound := macPorts(t, e), boundPorts(t, e)
	for b := byte(10); b < 30; b++ {
		want := b1.port.id
		if b >= 20 {
			want = b0.port.id
		}
		if macs[mac(b)] != want || bound[ipOf(b)] != want {
			t.Errorf("VM %d: MAC on port %d, address bound to %d; want both on %d", b, macs[mac(b)], bound[ipOf(b)], want)
		}
	}
	if n := moves(); n != 20 {
		t.Fatalf("mac_moves %d after 20 moves", n)
	}

	// A VM on the first loop keeps talking while its new port on the
	// second announces it: its loop writes when it last heard it as the
	// other reads it. Then it falls silent, and the next announcement
	// moves it (or one did already, if the machine stalled its loop for
	// moveSilence: the end is the same).
	c0, c1 := attach(l0), attach(l1)
	send(l0, c0, vmFrames(40, 1)...)
	waitFor(t, func() bool { return macPorts(t, e)[mac(40)] == c0.port.id })
	talk := make(chan struct{})
	talked := make(chan struct{})
	go func() {
		defer close(talked)
		for {
			select {
			case <-talk:
				return
			default:
			}
			if l0.do(func() { c0.send(vmFrames(40, 1)...); c0.ring() }) != nil {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	for i := 0; i < 20; i++ {
		send(l1, c1, rarp(mac(40)))
		time.Sleep(2 * time.Millisecond)
	}
	close(talk)
	<-talked
	time.Sleep(2 * moveSilence)
	send(l1, c1, rarp(mac(40)))
	waitFor(t, func() bool { return macPorts(t, e)[mac(40)] == c1.port.id })
	if port := boundPorts(t, e)[ipOf(40)]; port != c1.port.id {
		t.Fatalf("the talking VM's address is bound to port %d, want %d", port, c1.port.id)
	}
	waitFor(t, func() bool { return moves() == 21 })

	// The host's side (the TAP, on the first loop) hears a MAC while a
	// client of the second loop announces it; once silent there, the
	// client takes it. Then that client's device stops and the TAP takes
	// the MAC back on an announcement from another host, ending its
	// binding.
	d1 := attach(l1)
	writeFrame(t, host, ethFrame(broadcast, mac(50), 0x0800, 60))
	waitFor(t, func() bool { p, ok := macPorts(t, e)[mac(50)]; return ok && p == 0 })
	talk, talked = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(talked)
		for {
			select {
			case <-talk:
				return
			default:
			}
			unix.Write(host, ethFrame(broadcast, mac(50), 0x0800, 60))
			drainFrames(t, host)
			time.Sleep(time.Millisecond)
		}
	}()
	for i := 0; i < 20; i++ {
		send(l1, d1, rarp(mac(50)))
		time.Sleep(2 * time.Millisecond)
	}
	close(talk)
	<-talked
	time.Sleep(2 * moveSilence)
	send(l1, d1, rarp(mac(50)))
	waitFor(t, func() bool { return macPorts(t, e)[mac(50)] == d1.port.id })
	send(l1, d1, vmFrames(50, 1)...)
	waitFor(t, func() bool { return boundPorts(t, e)[ipOf(50)] == d1.port.id })
	stop(l1, d1)
	writeFrame(t, host, rarp(mac(50)))
	waitFor(t, func() bool { return macPorts(t, e)[mac(50)] == 0 })
	if port, ok := boundPorts(t, e)[ipOf(50)]; ok {
		t.Fatalf("the VM gone to another host is still bound to port %d", port)
	}
	if n := moves(); n != 23 {
		t.Fatalf("mac_moves %d after 23 moves", n)
	}
}
