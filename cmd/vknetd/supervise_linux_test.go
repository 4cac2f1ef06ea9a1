package main

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/engine"
	"github.com/vknetd/vknetd/internal/handover"
	"github.com/vknetd/vknetd/secure"
)

// TestSupervisorRecordAgesTables: the record a supervisor hands a new
// daemon after a crash has the snapshot's times moved on by the time
// since it arrived: MACs older, bindings with an end that much nearer
// it, one whose end passed meanwhile gone (a lease that ran out is not
// live again), and bindings that end with their port or never as they
// were.
func TestSupervisorRecordAgesTables(t *testing.T) {
	const elapsed = 5 * time.Second
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	snap := handover.Engine{
		MACs: []handover.MAC{
			{MAC: 0x020000000001, Port: 1, AgeNs: 0},
			{MAC: 0x020000000002, Port: 1, AgeNs: int64(2 * time.Second)},
			{MAC: 0x020000000003, Port: 9, AgeNs: 0}, // a port no longer held
		},
		Bindings: []handover.Binding{
			{IP: ip("198.18.0.10"), Port: 1, Source: uint8(secure.Lease), LeftNs: int64(time.Hour)},
			{IP: ip("198.18.0.11"), Port: 1, Source: uint8(secure.Lease), LeftNs: int64(elapsed)},     // ends as the new daemon starts
			{IP: ip("198.18.0.12"), Port: 1, Source: uint8(secure.Lease), LeftNs: int64(time.Second)}, // ran out meanwhile
			{IP: ip("198.18.0.13"), Port: 1, Source: uint8(secure.FirstUse), LeftNs: int64(elapsed + 1)},
			{IP: ip("198.18.0.14"), Port: 1, Source: uint8(secure.FirstUse), LeftNs: 0}, // ends with its port
			{IP: ip("198.18.0.15"), Port: 1, Source: uint8(secure.Lease), LeftNs: -1},   // never ends
		},
	}
	payload, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	arrived := time.Now()
	s := &supervisor{
		setup:      &handover.Record{},
		ports:      map[uint32]*heldPort{1: {port: handover.Port{ID: 1, Kind: "seqpacket", Fd: 0, PID: -1, UID: -1}, fds: []int{-1}}},
		snapshot:   payload,
		snapshotAt: arrived,
	}
	rec, _, _ := s.record(arrived.Add(elapsed))

	wantMACs := []handover.MAC{
		{MAC: 0x020000000001, Port: 1, AgeNs: int64(elapsed)},
		{MAC: 0x020000000002, Port: 1, AgeNs: int64(2*time.Second + elapsed)},
	}
	if len(rec.Engine.MACs) != len(wantMACs) {
		t.Fatalf("MACs %+v, want %+v", rec.Engine.MACs, wantMACs)
	}
	for i, m := range rec.Engine.MACs {
		if m != wantMACs[i] {
			t.Errorf("MAC %012x: %+v, want %+v (age moved on by the %v since the snapshot)", m.MAC, m, wantMACs[i], elapsed)
		}
	}
	wantLeft := map[string]int64{
		"198.18.0.10": int64(time.Hour - elapsed),
		"198.18.0.13": 1,
		"198.18.0.14": 0,
		"198.18.0.15": -1,
	}
	got := map[string]int64{}
	for _, b := range rec.Engine.Bindings {
		got[b.IP.String()] = b.LeftNs
	}
	for ip, left := range wantLeft {
		if l, ok := got[ip]; !ok || l != left {
			t.Errorf("binding %s: %d ns left (listed %v), want %d: the snapshot is %v old", ip, l, ok, left, elapsed)
		}
	}
	for ip, l := range got {
		if _, ok := wantLeft[ip]; !ok {
			t.Errorf("binding %s restored with %d ns left, but it ended before the new daemon started", ip, l)
		}
	}
}

// TestSupervisorHoldsVhostUserStateOpaquely: a vhost-user port's notice
// replaces the one held before it (its fds closed), is handed on with its
// device record exactly as it came and only its own fd moved, and is let
// go of when noted gone; a notice with more fds than any device has is
// refused, so a guest cannot make the supervisor hold more.
func TestSupervisorHoldsVhostUserStateOpaquely(t *testing.T) {
	daemon, theirs, err := handover.Pair()
	if err != nil {
		t.Fatal(err)
	}
	conn := handover.NewConn(theirs)
	eventfds := func(n int) []int {
		var fds []int
		for range n {
			fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			fds = append(fds, fd)
		}
		return fds
	}
	vhost := json.RawMessage(`{"device":{"features":1},"regions":[1],"kick":[2,-1],"call":[3,-1],"held":true}`)
	notice := func(id uint32, nfds int, gone bool, state json.RawMessage) []int {
		n := engine.PortNotice{ID: id, Gone: gone, Port: handover.Port{ID: id, Kind: "vhost-user", Fd: 0, Vhost: state}}
		b, err := json.Marshal(n)
		if err != nil {
			t.Fatal(err)
		}
		fds := eventfds(nfds)
		if err := daemon.Send(handover.KindPort, b, fds); err != nil {
			t.Fatal(err)
		}
		handover.CloseFds(fds)
		return fds
	}
	notice(1, 4, false, json.RawMessage(`{"held":true}`))
	notice(1, 4, false, vhost) // replaces the first
	notice(2, 4, false, vhost)
	notice(2, 0, true, nil)                      // gone
	notice(3, engine.MaxHeldFds+1, false, vhost) // more than a device has
	daemon.Close()
	s := &supervisor{setup: &handover.Record{}, ports: map[uint32]*heldPort{}, setupFds: []int{}}
	s.serve(conn)
	conn.Close()
	if len(s.ports) != 1 || s.ports[1] == nil || len(s.ports[1].fds) != 4 {
		t.Fatalf("holds %d ports (%v), want port 1 with its 4 fds", len(s.ports), s.ports)
	}
	s.setupFds = []int{-1, -1} // the daemon's own come first
	rec, _, fds := s.record(time.Now())
	if len(fds) != 4 || len(rec.Engine.Ports) != 1 {
		t.Fatalf("record: %d fds, ports %+v", len(fds), rec.Engine.Ports)
	}
	if p := rec.Engine.Ports[0]; p.Fd != 2 || string(p.Vhost) != string(vhost) {
		t.Errorf("port 1 handed on with fd %d and state %s; want fd 2 (after the daemon's 2) and the state as it came", p.Fd, p.Vhost)
	}
	s.release()
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
			t.Errorf("fd %d still open after release", fd)
		}
	}
}
