package engine

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/handover"
	"github.com/vknetd/vknetd/internal/vhostguest"
)

// TestAdoptVhostUserGuests: two Go guests switch frames; the engine is
// frozen and its state adopted by a new engine (memory mapped again,
// eventfds and ring indices carried over); frames a guest sent while
// nobody read arrive, and both guests go on switching both ways, without
// reconnecting.
func TestAdoptVhostUserGuests(t *testing.T) { forWorkers(t, testAdoptVhostUserGuests) }

func testAdoptVhostUserGuests(t *testing.T, workers int) {
	old, path := vhostSwitch(t, false, func(c *Config) { c.Offloads, c.Workers = true, workers })
	var thaw func()
	t.Cleanup(func() {
		if thaw != nil {
			thaw() // last: the new engine and the guests are gone
		}
	})
	a := startGuest(t, path, vhostguest.Options{})
	b := startGuest(t, path, vhostguest.Options{NoMergeRX: true, RXBufSize: 9100})
	waitFor(t, func() bool { s, _ := old.Stats(); return s.Clients == 2 })
	hello := ethFrame(broadcast, mac(2), 0x88b5, 60)
	if b.Send([][]byte{hello}, nil) != 1 {
		t.Fatal("b could not send")
	}
	if got := receiveFrames(t, a, 1); len(got) != 1 {
		t.Fatal("a did not get b's hello")
	}
	before, _ := old.Stats()

	f, err := old.Freeze(0)
	if err != nil {
		t.Fatal(err)
	}
	thaw = f.Thaw
	if f.Refused != nil {
		t.Fatal(f.Refused)
	}
	// While frozen: a sends; the frames wait in its ring.
	var want [][]byte
	for i := 0; i < 40; i++ {
		fr := ethFrame(mac(2), mac(1), 0x88b5, 1000)
		fr[20] = byte(i)
		want = append(want, fr)
	}
	for sent := 0; sent < len(want); {
		sent += a.Send(want[sent:], nil)
	}

	// What the record and SCM_RIGHTS would do: encode, decode, copies.
	ctl, _ := unix.Dup(0)
	defer unix.Close(ctl)
	rec := &handover.Record{Fds: len(f.Fds) + 1,
		Daemon: handover.Daemon{Control: len(f.Fds), Pidfile: -1, Metrics: -1, KeeperAlive: -1, Supervisor: -1, TAP: handover.TAP{Fd: -1}},
		Engine: f.State}
	payload, err := handover.Encode(rec)
	if err != nil {
		t.Fatal(err)
	}
	got, err := handover.Decode(payload, len(f.Fds)+1)
	if err != nil {
		t.Fatal(err)
	}
	fds := make([]int, len(f.Fds))
	for i, fd := range f.Fds {
		if fds[i], err = unix.Dup(fd); err != nil {
			t.Fatal(err)
		}
	}
	lfd, err := unix.Dup(old.cfg.Listeners[0].Fd)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(lfd)
	cfg := old.cfg
	cfg.Listeners = []Listener{{Fd: lfd, Kind: VhostUser, Path: path}}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Adopt(&got.Engine, fds); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run() }()
	t.Cleanup(func() {
		e.Stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})

	expectFrames(t, "b", receiveFrames(t, b, len(want)), want...)
	back := ethFrame(mac(1), mac(2), 0x88b5, 300)
	if b.Send([][]byte{back}, nil) != 1 {
		t.Fatal("b could not send after the handover")
	}
	if got := receiveFrames(t, a, 1); len(got) != 1 || !bytes.Equal(got[0], back) {
		t.Fatalf("a received %d frames after the handover, want b's one", len(got))
	}
	after, _ := e.Stats()
	if after.Clients != 2 || len(after.Ports) != len(before.Ports) {
		t.Fatalf("after the handover %d clients, ports %+v; before %+v", after.Clients, after.Ports, before.Ports)
	}
	for i, p := range after.Ports {
		q := before.Ports[i]
		if p.ID != q.ID || p.Kind != q.Kind || p.Offloads != q.Offloads || p.RxFrames < q.RxFrames {
			t.Errorf("port %+v after, %+v before", p, q)
		}
	}
}
