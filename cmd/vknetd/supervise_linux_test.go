package main

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"

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
