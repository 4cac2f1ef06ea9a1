package engine

import (
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/mactable"
)

// withTap gives the switch a TAP port whose other end (returned) is a
// socketpair: what the test writes there is what the host's kernel (a
// bridged LAN, other hosts over VXLAN) sends, frame by frame.
func withTap(t *testing.T, cfg *Config) int {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fds[1], true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]) })
	cfg.TapFd, cfg.TapName = fds[1], "tap-test"
	return fds[0]
}

func writeFrame(t *testing.T, fd int, f []byte) {
	t.Helper()
	if _, err := unix.Write(fd, f); err != nil {
		t.Fatalf("write to the TAP's socket: %v", err)
	}
}

// Finding 4 of issue 15: one frame from the underlay with a live local
// client's source MAC moved that MAC to the TAP, so the client's traffic
// went out to the sender and its own frames were dropped as src-mac-in-use.
// In either mode the TAP's frame is dropped instead, counted as
// remote-mac-conflict, and the client keeps its MAC and its traffic.
func TestUnderlayCannotTakeALiveClientMAC(t *testing.T) {
	for _, secureMode := range []bool{true, false} {
		name := "unsecure"
		if secureMode {
			name = "secure"
		}
		t.Run(name, func(t *testing.T) {
			var host int
			s := newTestSwitch(t, secureMode, mactable.Config{}, func(c *Config) { host = withTap(t, c) })
			tapPort := s.e.ports.get(0)
			a, b := s.connect(), s.connect()
			aIP, bIP := [4]byte{198, 18, 0, 5}, [4]byte{198, 18, 0, 6}
			a.send(t, ipv4UDP(broadcast, mac(5), aIP, [4]byte{198, 18, 255, 255}))
			b.send(t, ipv4UDP(broadcast, mac(6), bIP, [4]byte{198, 18, 255, 255}))
			s.pump()
			expectFrames(t, "b", b.recv(t), ipv4UDP(broadcast, mac(5), aIP, [4]byte{198, 18, 255, 255}))
			a.recv(t)
			drainFrames(t, host)

			// The underlay speaks from a's MAC, to broadcast and to b.
			writeFrame(t, host, ethFrame(broadcast, mac(5), 0x0800, 60))
			writeFrame(t, host, ethFrame(mac(6), mac(5), 0x0800, 60))
			s.pump()
			if got := tapPort.cnt.drops[DropRemoteMACConflict]; got != 2 {
				t.Fatalf("remote-mac-conflict drops on the TAP = %d, want 2 (drops %v)", got, tapPort.cnt.drops)
			}
			if port, ok := s.e.macs.Lookup(macKey(5), s.l.now); !ok || port != a.port.id {
				t.Fatalf("a's MAC is on port %d (live %v), want a's port %d", port, ok, a.port.id)
			}
			expectFrames(t, "a", a.recv(t))
			expectFrames(t, "b", b.recv(t))

			// a still reaches b, b still reaches a, and nothing of theirs
			// goes to the host.
			fromA := ipv4UDP(mac(6), mac(5), aIP, bIP)
			a.send(t, fromA)
			s.pump()
			toA := ipv4UDP(mac(5), mac(6), bIP, aIP)
			b.send(t, toA)
			s.pump()
			expectFrames(t, "b", b.recv(t), fromA)
			expectFrames(t, "a", a.recv(t), toA)
			expectFrames(t, "the host", drainFrames(t, host))
			if a.port.cnt.drops != ([numDrops]uint64{}) || a.port.cnt.secureDrops[0] != 0 {
				t.Fatalf("a's own frames were dropped: %v %v", a.port.cnt.drops, a.port.cnt.secureDrops)
			}

			// The host's side keeps learning MACs of its own.
			writeFrame(t, host, ethFrame(broadcast, mac(9), 0x0800, 60))
			s.pump()
			if port, ok := s.e.macs.Lookup(macKey(9), s.l.now); !ok || port != 0 {
				t.Fatalf("a remote MAC is on port %d (live %v), want the TAP", port, ok)
			}
			// The daemon pins what ClientMACs lists in the host's bridge.
			got := s.e.ClientMACs(nil)
			if len(got) != 2 || !slices.Contains(got, mac(5)) || !slices.Contains(got, mac(6)) {
				t.Fatalf("ClientMACs = %x, want a's and b's MACs and not the TAP's", got)
			}
			if secureMode {
				return
			}
			// -U: a client may still take a MAC from the host's side and
			// from another client (a VM moving); only the host's side
			// never takes one from a client.
			b.send(t, ethFrame(broadcast, mac(9), 0x0800, 60))
			s.pump()
			if port, _ := s.e.macs.Lookup(macKey(9), s.l.now); port != b.port.id {
				t.Fatalf("-U: a client could not take a MAC from the host's side: on port %d", port)
			}
			b.send(t, ethFrame(broadcast, mac(5), 0x0800, 60))
			s.pump()
			if port, _ := s.e.macs.Lookup(macKey(5), s.l.now); port != b.port.id {
				t.Fatalf("-U: a MAC could not move from client to client: on port %d", port)
			}
		})
	}
}

// Finding 5 of issue 15: 20,000 source MACs from the underlay filled
// --mac-max, and a client connecting afterwards got mac-table-full on
// every frame. The TAP learns at most --remote-macs (HostLimit); beyond
// it its frames are forwarded unlearned, so the host keeps working.
func TestUnderlayCannotFillTheTable(t *testing.T) {
	var host int
	mt := mactable.Config{Capacity: 256, PortLimit: 16, HostLimit: 64}
	s := newTestSwitch(t, true, mt, func(c *Config) { host = withTap(t, c) })
	tapPort := s.e.ports.get(0)
	hostMAC := mac(0xfe)
	writeFrame(t, host, ethFrame(broadcast, hostMAC, 0x0806, 60))
	s.pump()
	const flood = 1000
	for i := 0; i < flood; i++ {
		src := [6]byte{0x02, 0xee, 0, 0, byte(i >> 8), byte(i)}
		writeFrame(t, host, ethFrame(broadcast, src, 0x0800, 60))
		if i%100 == 99 {
			s.pump() // the socket holds a few hundred frames
		}
	}
	s.pump()
	if n := s.e.macs.PortLen(0); n != 64 {
		t.Fatalf("the TAP holds %d MACs, want --remote-macs 64", n)
	}
	if got := tapPort.cnt.unlearned; got != flood+1-64 {
		t.Fatalf("the TAP's unlearned frames = %d, want %d", got, flood+1-64)
	}
	c := s.connect()
	toHost := ipv4UDP(hostMAC, mac(7), [4]byte{198, 18, 0, 7}, [4]byte{198, 18, 0, 1})
	c.send(t, toHost)
	s.pump()
	if c.port.cnt.drops != ([numDrops]uint64{}) {
		t.Fatalf("the new client's frame was dropped: %v", c.port.cnt.drops)
	}
	expectFrames(t, "the host", drainFrames(t, host), toHost)
	if port, ok := s.e.macs.Lookup(macKey(7), s.l.now); !ok || port != c.port.id {
		t.Fatalf("the new client's MAC was not learned: port %d live %v", port, ok)
	}
	// An unlearned remote MAC is still reachable: its frames flood, to
	// the host among others.
	toRemote := ipv4UDP([6]byte{0x02, 0xee, 0, 0, 3, 0xe7}, mac(7), [4]byte{198, 18, 0, 7}, [4]byte{198, 18, 0, 9})
	c.send(t, toRemote)
	s.pump()
	expectFrames(t, "the host", drainFrames(t, host), toRemote)
}

// The underlay's frames cost no allocation, refused (remote-mac-conflict)
// or learned or forwarded unlearned (over --remote-macs), once the one
// log line the refusals allow is written.
func TestUnderlayFramesAllocateNothing(t *testing.T) {
	var host int
	s := newTestSwitch(t, true, mactable.Config{Capacity: 64, PortLimit: 8, HostLimit: 2}, func(c *Config) { host = withTap(t, c) })
	tapPort := s.e.ports.get(0)
	a := s.connect()
	a.send(t, ipv4UDP(broadcast, mac(5), [4]byte{198, 18, 0, 5}, [4]byte{198, 18, 255, 255}))
	s.pump()
	drainFrames(t, host)
	if err := unix.SetNonblock(a.fd, true); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for _, c := range []struct {
		what  string
		frame []byte
	}{
		{"conflict", ethFrame(broadcast, mac(5), 0x0800, 60)},
		{"learned", ethFrame(mac(5), mac(9), 0x0800, 60)},
		{"unlearned", ethFrame(mac(5), mac(10), 0x0800, 60)}, // after mac(11) fills --remote-macs
	} {
		writeFrame(t, host, ethFrame(mac(5), mac(11), 0x0800, 60))
		writeFrame(t, host, c.frame)
		s.pump()
		a.recv(t)
		allocs := testing.AllocsPerRun(200, func() {
			unix.Write(host, c.frame)
			s.l.step(0)
			unix.Read(a.fd, buf) // non-blocking: a conflict delivers nothing
		})
		if allocs != 0 {
			t.Errorf("%s: a TAP frame allocates %.1f times", c.what, allocs)
		}
	}
	if tapPort.cnt.drops[DropRemoteMACConflict] < 200 || tapPort.cnt.unlearned < 200 {
		t.Fatalf("conflicts %d, unlearned %d: the paths measured were not taken", tapPort.cnt.drops[DropRemoteMACConflict], tapPort.cnt.unlearned)
	}
}
