package engine

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
	"github.com/vknetd/vknetd/internal/vhostguest"
)

// A multi-queue guest through the switch: a guest with 4 queue pairs
// sends one flow on each of its TX rings to a single-queue guest, which
// gets every frame, each flow in order; the single-queue guest's 16 flows
// back reach the multi-queue guest spread over its RX rings, each flow on
// one ring and in order. The kick fds of every ring are polled: frames
// sent on pair 3 alone, to a switch asleep, still cross.
func TestVhostUserMultiQueueGuest(t *testing.T) {
	e, path := vhostSwitch(t, false, nil)
	a := startGuest(t, path, vhostguest.Options{})
	const pairs = 4
	m := startGuest(t, path, vhostguest.Options{QueuePairs: pairs})
	for k := 1; k < pairs; k++ {
		m.Use(k)
		m.PostRX(1 << 16)
	}
	waitFor(t, func() bool { s, _ := e.Stats(); return s.Clients == 2 })
	ipA, ipM := netip.AddrFrom4([4]byte{198, 18, 1, 1}), netip.AddrFrom4([4]byte{198, 18, 1, 2})
	flow := func(dst, src [6]byte, sip, dip netip.Addr, port, seq int) []byte {
		payload := make([]byte, 18)
		binary.BigEndian.PutUint16(payload, uint16(seq))
		return testbed.IPv4UDP(src, dst, sip, dip, uint16(port), 5000, payload)
	}
	seqOf := func(f []byte) (port, seq int) {
		return int(binary.BigEndian.Uint16(f[34:])), int(binary.BigEndian.Uint16(f[42:]))
	}
	// a speaks first, so the switch knows where mac(1) is.
	if a.Send([][]byte{ethFrame(broadcast, mac(1), 0x88b5, 60)}, nil) != 1 {
		t.Fatal("a could not send")
	}
	m.Use(0)
	receiveFrames(t, m, 1)

	// Pair 3 alone: its kick is the only one that can wake the switch.
	m.Use(3)
	if m.Send([][]byte{flow(mac(1), mac(2), ipM, ipA, 3003, 0)}, nil) != 1 {
		t.Fatal("m could not send on pair 3")
	}
	if got := receiveFrames(t, a, 1); len(got) != 1 {
		t.Fatal("a frame sent on pair 3 did not cross")
	}
	const each = 8
	for i := range each {
		for k := range pairs {
			m.Use(k)
			if m.Send([][]byte{flow(mac(1), mac(2), ipM, ipA, 3000+k, i+1)}, nil) != 1 {
				t.Fatalf("m could not send on pair %d", k)
			}
		}
	}
	next := map[int]int{3003: 1}
	for _, f := range receiveFrames(t, a, pairs*each) {
		port, seq := seqOf(f)
		if next[port] == 0 {
			next[port] = 1
		}
		if seq != next[port] {
			t.Fatalf("flow %d: frame %d after %d", port, seq, next[port]-1)
		}
		next[port]++
	}
	for k := range pairs {
		if next[3000+k] != each+1 {
			t.Fatalf("flow of pair %d: %d of %d frames arrived", k, next[3000+k]-1, each)
		}
	}

	// Back: 16 flows to m, spread over its rings.
	const flows = 16
	for i := range each {
		for f := range flows {
			for a.Send([][]byte{flow(mac(2), mac(1), ipA, ipM, 4000+f, i)}, nil) != 1 {
				time.Sleep(time.Millisecond)
			}
		}
	}
	ringOf := map[int]int{}
	seen := map[int]int{}
	got, rings := 0, 0
	deadline := time.Now().Add(5 * time.Second)
	bufs := make([][]byte, 256)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, len(bufs))
	for got < flows*each && time.Now().Before(deadline) {
		for k := range pairs {
			m.Use(k)
			n := m.Receive(bufs, sizes, nil)
			m.PostRX(n)
			for i := range n {
				port, seq := seqOf(bufs[i][:sizes[i]])
				if r, ok := ringOf[port]; ok && r != k {
					t.Fatalf("flow %d on rings %d and %d", port, r, k)
				} else if !ok {
					ringOf[port] = k
				}
				if seq != seen[port] {
					t.Fatalf("ring %d, flow %d: frame %d after %d", k, port, seq, seen[port]-1)
				}
				seen[port]++
			}
			got += n
		}
		time.Sleep(time.Millisecond)
	}
	if got != flows*each {
		t.Fatalf("m received %d of %d frames", got, flows*each)
	}
	for _, k := range ringOf {
		rings |= 1 << k
	}
	if rings&(rings-1) == 0 {
		t.Fatalf("%d flows all on one ring (%b)", flows, rings)
	}
}
