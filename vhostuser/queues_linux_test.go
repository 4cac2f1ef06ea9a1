package vhostuser

import (
	"encoding/binary"
	"sync"
	"testing"

	"github.com/vknetd/vknetd/internal/vhostguest"
)

// A device's pairs served apart (Serve): the Queues of pairs 1 and 3 and
// the device's own data path (pairs 0 and 2) read and write at the same
// time, from two goroutines, each only its own rings (the race detector
// watches them share nothing they write); frames for the other's rings
// are strays, never written; every frame arrives once, each flow on one
// ring and in order; Rejoin takes the pairs and their counters back.
func TestServeSplitsPairs(t *testing.T) {
	const pairs = 4
	p := newPair(t, vhostguest.Options{QueuePairs: pairs})
	for k := range pairs {
		p.g.Use(k)
		p.g.PostRX(1 << 16)
	}
	if m := p.d.SpreadPairs(); m != 0b1111 {
		t.Fatalf("SpreadPairs = %b, want 1111", m)
	}
	apart := p.d.Serve(0b1010, nil)
	if p.d.Pairs()&0b1111 != 0b0101 || apart.Pairs() != 0b1010 {
		t.Fatalf("pairs at home %b, apart %b", p.d.Pairs(), apart.Pairs())
	}
	const each = 6
	for k := range pairs {
		p.g.Use(k)
		for i := range each {
			if p.g.Send([][]byte{udpFlowFrame(1000+k, i)}, nil) != 1 {
				t.Fatalf("pair %d: could not send frame %d", k, i)
			}
		}
	}
	// The frames back: 32 flows, split by the pair their flow goes to.
	var mine, theirs [][]byte
	for i := range each {
		for f := range 32 {
			fr := udpFlowFrame(2000+f, i)
			if k, ok := p.d.RXPair(fr); !ok {
				t.Fatal("RXPair: no RX ring runs")
			} else if apart.Pairs()&(1<<k) != 0 {
				theirs = append(theirs, fr)
			} else {
				mine = append(mine, fr)
			}
		}
	}
	if len(mine) == 0 || len(theirs) == 0 {
		t.Fatalf("32 flows: %d frames for home, %d for the pairs apart", len(mine), len(theirs))
	}
	serveHalf := func(s *Queues, out [][]byte, ports map[int]bool) {
		b, sizes := bufs(64, 2048)
		n, _, err := s.ReadTX(b, sizes, nil)
		if err != nil {
			t.Error(err)
			return
		}
		for i := range n {
			ports[int(binary.BigEndian.Uint16(b[i][34:]))] = true
		}
		if r, err := s.WriteRXBatch(out, nil); err != nil || r.N != len(out) || r.Stray != 0 {
			t.Errorf("WriteRXBatch = %+v, %v; want %d frames, no stray", r, err, len(out))
		}
	}
	home, away := map[int]bool{}, map[int]bool{}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); serveHalf(&p.d.Queues, mine, home) }()
	go func() { defer wg.Done(); serveHalf(apart, theirs, away) }()
	wg.Wait()
	if len(home) != 2 || !home[1000] || !home[1002] || len(away) != 2 || !away[1001] || !away[1003] {
		t.Fatalf("flows read at home %v, apart %v; want pairs 0,2 and 1,3", home, away)
	}
	if st := apart.Stats(); st.TXFrames != 2*each || st.RXFrames != uint64(len(theirs)) {
		t.Fatalf("apart counted %d TX, %d RX frames; want %d, %d", st.TXFrames, st.RXFrames, 2*each, len(theirs))
	}
	// Frames for the other's rings are not written.
	if r, _ := apart.WriteRXBatch(mine[:1], nil); r.N != 1 || r.Stray != 1 {
		t.Fatalf("a frame for a pair at home written apart: %+v", r)
	}
	got := 0
	b, sizes := bufs(256, 2048)
	for k := range pairs {
		p.g.Use(k)
		n := p.g.Receive(b, sizes, nil)
		next := map[int]int{}
		for i := range n {
			f := b[i][:sizes[i]]
			port := int(binary.BigEndian.Uint16(f[34:]))
			if want, _ := p.d.RXPair(f); want != k {
				t.Fatalf("flow %d on ring of pair %d, its flow's pair is %d", port, k, want)
			}
			if seq := int(binary.BigEndian.Uint16(f[len(f)-2:])); seq != next[port] {
				t.Fatalf("pair %d, flow %d: frame %d after %d", k, port, seq, next[port]-1)
			}
			next[port]++
		}
		got += n
	}
	if got != len(mine)+len(theirs) {
		t.Fatalf("received %d frames, want %d", got, len(mine)+len(theirs))
	}
	p.d.Rejoin(apart)
	if p.d.Pairs()&0b1111 != 0b1111 || apart.Pairs() != 0 {
		t.Fatalf("after Rejoin: home %b, apart %b", p.d.Pairs(), apart.Pairs())
	}
	if st := p.d.Stats(); st.TXFrames != pairs*each || st.RXFrames != uint64(got) {
		t.Fatalf("device counted %d TX, %d RX frames after Rejoin; want %d, %d", st.TXFrames, st.RXFrames, pairs*each, got)
	}
}
