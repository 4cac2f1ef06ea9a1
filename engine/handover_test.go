package engine

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/handover"
	"github.com/vknetd/vknetd/mactable"
	"github.com/vknetd/vknetd/secure"
)

// handOver exports s's state through the wire format, as an upgrade does,
// and makes a new switch adopt it on copies of the fds.
func handOver(t *testing.T, s *testSwitch) *testSwitch {
	t.Helper()
	return handOverWith(t, s, nil)
}

// handOverWith is handOver to a switch whose configuration tweak sets as
// the new daemon's flags would (its policy, its TAP).
func handOverWith(t *testing.T, s *testSwitch, tweak func(*Config)) *testSwitch {
	t.Helper()
	f := &Frozen{thaw: make(chan struct{})} // fdBase 0: the engine's fds first
	s.e.export(f)
	if f.Refused != nil {
		t.Fatal(f.Refused)
	}
	// The daemon's part of the record: a control socket is all Decode
	// requires; a dup of stdin stands for it.
	ctl, err := unix.Dup(0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ctl)
	b, err := handover.Encode(&handover.Record{Fds: len(f.Fds) + 1,
		Daemon: handover.Daemon{Control: len(f.Fds), Pidfile: -1, Metrics: -1, KeeperAlive: -1, Supervisor: -1, TAP: handover.TAP{Fd: -1}},
		Engine: f.State})
	if err != nil {
		t.Fatal(err)
	}
	r, err := handover.Decode(b, len(f.Fds)+1)
	if err != nil {
		t.Fatal(err)
	}
	// What SCM_RIGHTS does: the new process gets copies.
	fds := make([]int, len(f.Fds))
	for i, fd := range f.Fds {
		if fds[i], err = unix.Dup(fd); err != nil {
			t.Fatal(err)
		}
	}
	n := newTestSwitch(t, s.e.secure, mactable.Config{}, func(c *Config) {
		withWorkers(len(s.e.loops))(c)
		if tweak != nil {
			tweak(c)
		}
	})
	if err := n.e.Adopt(&r.Engine, fds); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestAdoptKeepsPortsTablesAndCounters: after a handover the new switch
// has the same port ids, counters, MAC table and bindings, and forwards
// between the clients without learning anything again.
func TestAdoptKeepsPortsTablesAndCounters(t *testing.T) {
	forWorkers(t, testAdoptKeepsPortsTablesAndCounters)
}

func testAdoptKeepsPortsTablesAndCounters(t *testing.T, workers int) {
	s := newTestSwitch(t, true, mactable.Config{}, withWorkers(workers))
	a, b := s.connect(), s.connect()
	a.send(t, ipv4UDP(broadcast, mac(1), [4]byte{198, 18, 0, 11}, [4]byte{198, 18, 255, 255}))
	b.send(t, ipv4UDP(mac(1), mac(2), [4]byte{198, 18, 0, 12}, [4]byte{198, 18, 0, 11}))
	s.pump()
	a.recv(t)
	b.recv(t)
	before := s.e.stats()
	bindsBefore := bindingsOf(s.e)

	n := handOver(t, s)
	after := n.e.stats()
	if !reflect.DeepEqual(portsOf(before), portsOf(after)) || before.Accepted != after.Accepted || before.MACs != after.MACs {
		t.Fatalf("ports before %+v\nafter %+v", before, after)
	}
	if got := bindingsOf(n.e); !reflect.DeepEqual(got, bindsBefore) || len(got) != 2 {
		t.Fatalf("bindings before %v after %v", bindsBefore, got)
	}
	// The old switch's fds are the clients' still: the new one answers.
	frame := ipv4UDP(mac(2), mac(1), [4]byte{198, 18, 0, 11}, [4]byte{198, 18, 0, 12})
	a.send(t, frame)
	n.pump()
	expectFrames(t, "b", b.recv(t), frame)
	if got := n.e.stats(); got.MACs != 2 {
		t.Fatalf("%d MACs after forwarding, want the 2 adopted", got.MACs)
	}
}

// TestAdoptCarriesStreamHalves: a stream's half-read frame and a frame
// half sent continue in the new switch, so the byte stream stays in step.
func TestAdoptCarriesStreamHalves(t *testing.T) {
	forWorkers(t, testAdoptCarriesStreamHalves)
}

func testAdoptCarriesStreamHalves(t *testing.T, workers int) {
	s := newTestSwitch(t, false, mactable.Config{}, withWorkers(workers))
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	unix.SetNonblock(fds[1], true)
	if _, err := s.e.addClient(fds[1], Stream, "test"); err != nil {
		t.Fatal(err)
	}
	peer := s.connect()
	frame := ethFrame(mac(9), mac(3), 0x0800, 200)
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(frame)))
	msg = append(msg, frame...)
	unix.Write(fds[0], msg[:100]) // half a frame
	s.pump()
	n := handOver(t, s)
	unix.Write(fds[0], msg[100:])
	n.pump()
	expectFrames(t, "peer", peer.recv(t), frame)
}

// forWorkers runs a handover test on a switch of one loop and of two.
func forWorkers(t *testing.T, test func(*testing.T, int)) {
	for _, workers := range []int{1, 2} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) { test(t, workers) })
	}
}

func portsOf(s Stats) []PortStats {
	out := append([]PortStats(nil), s.Ports...)
	for i := range out {
		out[i].Queued = 0
		if len(out[i].Drops) == 0 {
			out[i].Drops = nil
		}
	}
	return out
}

func bindingsOf(e *Engine) map[string]uint32 {
	m := map[string]uint32{}
	e.policy.Bindings(func(b secure.Binding) { m[b.IP.String()] = b.Port })
	return m
}
