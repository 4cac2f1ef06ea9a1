package main

import (
	"bytes"
	"testing"

	"github.com/vknetd/vknetd/control"
)

func TestWritePorts(t *testing.T) {
	var b bytes.Buffer
	writePorts(&b, []control.Port{
		{ID: 0, Kind: "tap", Name: "tap0", PID: -1, UID: -1, MACs: 1, RxFrames: 3, RxBytes: 266, Drops: map[string]uint64{},
			Offloads: "csum,tso4,tso6,ecn", Workers: "0"},
		{ID: 3, Kind: "seqpacket", Name: "pid 123 uid 1000", PID: 123, UID: 1000, MACs: 2, RxFrames: 10, RxBytes: 1500, TxFrames: 4, TxBytes: 400,
			Queued: 1, Drops: map[string]uint64{"tx-queue-full": 3, "ipv4-src-outside": 1, "runt": 0}, Offloads: "-", Workers: "1"},
		{ID: 5, Kind: "vhost-user", Name: "pid 8 uid 0", PID: 8, UID: 0, Drops: map[string]uint64{}, Offloads: "-", Workers: "1,0,1,0", Kicks: 42},
		{ID: 4, Kind: "vhost-user", Name: "pid 9 uid 0", PID: 9, UID: 0, Drops: map[string]uint64{}}, // an older daemon: no offloads or workers fields
	})
	const want = `PORT  KIND        PID  UID   MACS  RX-FRAMES  RX-BYTES  TX-FRAMES  TX-BYTES  QUEUED  OFFLOADS            WORKERS  KICKS  DROPS                               NAME
0     tap         -    -     1     3          266       0          0         0       csum,tso4,tso6,ecn  0        -      -                                   tap0
3     seqpacket   123  1000  2     10         1500      4          400       1       -                   1        -      ipv4-src-outside=1,tx-queue-full=3  pid 123 uid 1000
5     vhost-user  8    0     0     0          0         0          0         0       -                   1,0,1,0  42     -                                   pid 8 uid 0
4     vhost-user  9    0     0     0          0         0          0         0       -                   -        0      -                                   pid 9 uid 0
`
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestWriteMACsLikeBridgeFdb(t *testing.T) {
	var b bytes.Buffer
	writeMACs(&b, []control.MAC{
		{MAC: "02:00:00:00:00:05", Port: 3, Kind: "seqpacket", Name: "pid 123 uid 0", PID: 123, AgeSecs: 12.4},
		{MAC: "e2:8a:0b:3d:17:6e", Port: 0, Kind: "tap", Name: "tap0", PID: -1, AgeSecs: 0.2},
		{MAC: "02:00:00:00:00:07", Port: 4, Kind: "dgram", Name: "/run/vm 1.sock", PID: -1, AgeSecs: 301},
		{MAC: "02:00:00:00:00:09", Port: 5, PID: -1, PortGone: true},
		{MAC: "ce:20:71:f1:44:b3", Port: 0, Kind: "tap", Name: "tap0", PID: -1, AgeSecs: 3, Via: "vkvx42", VTEP: "198.19.0.2"},
		{MAC: "ce:20:71:f1:44:b4", Port: 0, Kind: "tap", Name: "tap0", PID: -1, AgeSecs: 3, Via: "vxlan100"},
	})
	const want = `02:00:00:00:00:05 port 3 seqpacket pid 123 age 12s
e2:8a:0b:3d:17:6e port 0 tap tap0 age 0s
02:00:00:00:00:07 port 4 dgram /run/vm 1.sock age 5m1s
02:00:00:00:00:09 port 5 age 0s (port closed)
ce:20:71:f1:44:b3 port 0 tap tap0 age 3s remote via vkvx42 dst 198.19.0.2
ce:20:71:f1:44:b4 port 0 tap tap0 age 3s remote via vxlan100
`
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestWriteBindings(t *testing.T) {
	var b bytes.Buffer
	writeBindings(&b, []control.Binding{
		{IP: "198.18.0.2", MAC: "02:00:00:00:00:05", Port: 3, Source: "first-use", ExpiresSecs: 299.6},
		{IP: "198.18.7.130", MAC: "02:00:00:00:00:06", Port: 4, Source: "range"},
	})
	if want := "198.18.0.2 02:00:00:00:00:05 port 3 first-use expires 5m0s\n" +
		"198.18.7.130 02:00:00:00:00:06 port 4 range expires with its client\n"; b.String() != want {
		t.Fatalf("got %q, want %q", b.String(), want)
	}
}

func TestWriteStats(t *testing.T) {
	var b bytes.Buffer
	writeStats(&b, control.Stats{
		Clients: 2, ClientsByKind: map[string]int{"seqpacket": 1, "stream": 0, "dgram": 1}, Monitors: 1, Accepted: 9,
		MACs: 3, MACMoves: 2, Buffers: 128, BuffersFree: 90, Queued: 4,
		Traffic: control.Sides{
			TAP:     control.Traffic{RxFrames: 10, RxBytes: 1000, TxFrames: 20, TxBytes: 2000},
			Clients: control.Traffic{RxFrames: 106, RxBytes: 10560, TxFrames: 209, TxBytes: 20820},
			Remote:  &control.Traffic{RxFrames: 4, RxBytes: 400, TxFrames: 5, TxBytes: 500},
		},
		Drops: map[string]uint64{"tx-queue-full": 13, "ipv4-src-outside": 1}, Unlearned: 6,
	})
	const want = `clients         2 (seqpacket 1, stream 0, dgram 1, vhost-user 0), 9 accepted since start
monitors        1
macs            3, 2 moved with their VM
buffers         90 free of 128, 4 frames queued
tap             rx 10 frames 1000 bytes, tx 20 frames 2000 bytes
  remote hosts  rx 4 frames 400 bytes, tx 5 frames 500 bytes
all clients     rx 106 frames 10560 bytes, tx 209 frames 20820 bytes
drops           ipv4-src-outside 1, tx-queue-full 13
unlearned       6
`
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}
