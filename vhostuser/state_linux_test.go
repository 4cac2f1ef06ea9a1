package vhostuser

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/vhostguest"
)

// exportAdopt hands p's device over as an upgrade does, on copies of its
// fds, and returns the adopted device and what it told Config.Memory.
func exportAdopt(t *testing.T, p *pair) (*Device, *uint64) {
	t.Helper()
	st, fds, err := p.d.Export()
	if err != nil {
		t.Fatal(err)
	}
	dup := func(fd int) int {
		if fd < 0 {
			return -1
		}
		n, err := unix.Dup(fd)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	c := FDs{Socket: dup(fds.Socket)}
	for _, fd := range fds.Regions {
		c.Regions = append(c.Regions, dup(fd))
	}
	for i := range fds.Kick {
		c.Kick[i], c.Call[i] = dup(fds.Kick[i]), dup(fds.Call[i])
	}
	charged := new(uint64)
	d, err := Adopt(Config{Memory: func(n uint64) error { *charged = n; return nil }}, st, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, charged
}

// A device whose guest is being migrated is not handed over: Export says
// why (the upgrade is refused, the old daemon keeps logging); before the
// migration started it is.
func TestExportRefusesMigratingDevice(t *testing.T) {
	p := newPair(t, vhostguest.Options{})
	if _, _, err := p.d.Export(); err != nil {
		t.Fatalf("Export before the migration: %v", err)
	}
	migrating(t, p)
	if _, _, err := p.d.Export(); !errors.Is(err, ErrMigrating) {
		t.Fatalf("Export while logging: %v, want ErrMigrating", err)
	}
}

// What the dirty-log and SEND_RARP messages leave in a device outside a
// migration crosses an upgrade: the rings' log flags and addresses, an
// announcement not sent yet (the adopted device sends it), which rings
// were stopped; and closed, it gives back the memory it was charged for.
func TestAdoptCarriesAnnouncementAndRingLogAddresses(t *testing.T) {
	p := newPair(t, vhostguest.Options{})
	mac := [6]byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	var addrs [numQueues]vringAddr
	for i := range addrs {
		addrs[i] = p.d.q[i].addr
	}
	err := serve(p.d, func() error {
		if err := ask(p.g, vhostguest.ReqSetProtocolFeatures, u64p(protoMigration)); err != nil {
			return err
		}
		for i, a := range addrs {
			if err := ask(p.g, vhostguest.ReqSetVringAddr, loggedAddr(uint32(i), a.desc, a.used, a.avail, 0x5000+uint64(i)<<12)); err != nil {
				return err
			}
		}
		return ask(p.g, 19, append(mac[:], 0, 0)) // SEND_RARP
	})
	if err != nil {
		t.Fatal(err)
	}
	p.d.stoppedRings = 1 << RXQ // as GET_VRING_BASE leaves it
	d, charged := exportAdopt(t, p)
	for i := range addrs {
		if a := d.q[i].addr; a.flags != vringFLog || a.log != 0x5000+uint64(i)<<12 {
			t.Errorf("queue %d: log flags %#x at %#x, want %#x at %#x", i, a.flags, a.log, vringFLog, 0x5000+i<<12)
		}
	}
	if !d.announcePending || d.announce != mac || !d.Stopped() {
		t.Fatalf("announce %v %x, stopped %v", d.announcePending, d.announce, d.Stopped())
	}
	if *charged == 0 || d.charged != *charged {
		t.Fatalf("the adopted device told Config.Memory of %d bytes and holds %d as told", *charged, d.charged)
	}
	d.Close()
	if *charged != 0 {
		t.Fatalf("the adopted device, closed, still holds %d bytes of guest memory", *charged)
	}
}

// A multi-queue guest crosses an upgrade with all its pairs: the adopted
// device knows how many there are and reads every pair's TX ring where
// the old one left it. Before the handover carried them, the adopted
// device had one pair and the frames on pairs 1-3 stayed in their rings.
func TestAdoptCarriesEveryQueuePair(t *testing.T) {
	const pairs = 4
	p := newPair(t, vhostguest.Options{QueuePairs: pairs})
	for k := range pairs {
		p.g.Use(k)
		if p.g.Send([][]byte{udpFlowFrame(1000+k, 0)}, nil) != 1 {
			t.Fatalf("pair %d: could not send", k)
		}
	}
	d, _ := exportAdopt(t, p)
	if d.pairs != pairs {
		t.Fatalf("adopted device has %d pairs, want %d", d.pairs, pairs)
	}
	b, sizes := bufs(64, 2048)
	n, _, err := d.ReadTX(b, sizes, nil)
	if err != nil || n != pairs {
		t.Fatalf("adopted device read %d frames (%v), want one from each of %d pairs", n, err, pairs)
	}
}

// A state with more rings than the device has, an odd number, pairs
// beyond its rings or pairs without the multi-queue protocol feature is
// refused, never indexed past the device's queues.
func TestAdoptRefusesImpossibleQueues(t *testing.T) {
	p := newPair(t, vhostguest.Options{})
	st, _, err := p.d.Export()
	if err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*State){
		"too many rings": func(s *State) { s.Queues = append(s.Queues, s.Queues[:2]...) },
		"odd rings":      func(s *State) { s.Queues = s.Queues[:3] },
		"no rings":       func(s *State) { s.Queues = nil },
		"pairs past rings": func(s *State) {
			s.Queues = s.Queues[:2]
			s.Pairs = 2
		},
		"pairs without MQ": func(s *State) { s.Pairs, s.Protocol = 2, s.Protocol&^(1<<protoFeatMQ) },
		"stopped past rings": func(s *State) {
			s.Queues = s.Queues[:2]
			s.Stopped = 1 << 5
		},
	} {
		bad := st
		bad.Queues = append([]QueueState(nil), st.Queues...)
		bad.Regions = nil
		mutate(&bad)
		fds := NoFDs()
		sock, err := unix.Dup(p.d.conn.fd)
		if err != nil {
			t.Fatal(err)
		}
		fds.Socket = sock
		if d, err := Adopt(Config{}, bad, fds); err == nil {
			d.Close()
			t.Errorf("%s: adopted", name)
		}
	}
}

// A guest's state with features this daemon does not offer is refused,
// and the error says which and why that may be: offloads turned off
// here, or a daemon older than the one that negotiated them (an upgrade
// to an older binary, which vknetctl upgrade then rolls back).
func TestAdoptNamesFeaturesNotOffered(t *testing.T) {
	p := newPair(t, vhostguest.Options{})
	st, _, err := p.d.Export()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		extra uint64
		want  string
	}{
		{1 << featNetCsum, "is --no-offload new?"},
		{1 << 40, "older than the one that handed the guest over"},
	} {
		bad := st
		bad.Regions = nil
		bad.Features |= c.extra
		fds := NoFDs()
		sock, err := unix.Dup(p.d.conn.fd)
		if err != nil {
			t.Fatal(err)
		}
		fds.Socket = sock
		d, err := Adopt(Config{}, bad, fds)
		if err == nil {
			d.Close()
			t.Fatalf("features %#x: adopted", c.extra)
		}
		if msg := err.Error(); !strings.Contains(msg, fmt.Sprintf("%#x", c.extra)) || !strings.Contains(msg, c.want) {
			t.Errorf("features %#x: error %q, want the bits and %q", c.extra, msg, c.want)
		}
	}
}
