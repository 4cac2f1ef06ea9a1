package vhostuser

import (
	"encoding/binary"
	"testing"

	"github.com/vknetd/vknetd/internal/vhostguest"
)

// udpFlowFrame is an Ethernet/IPv4/UDP frame of flow port (source port),
// carrying seq in its last two bytes.
func udpFlowFrame(port, seq int) []byte {
	f := make([]byte, 14+20+8+16)
	copy(f, []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00})
	ip := f[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	copy(ip[12:], []byte{198, 18, 0, 1, 198, 18, 0, 2})
	binary.BigEndian.PutUint16(ip[20:], uint16(port))
	binary.BigEndian.PutUint16(ip[22:], 5001)
	binary.BigEndian.PutUint16(f[len(f)-2:], uint16(seq))
	return f
}

// A guest set up with 4 queue pairs (VIRTIO_NET_F_MQ and
// VHOST_USER_PROTOCOL_F_MQ, GET_QUEUE_NUM answered 8) sends on each
// pair's TX ring and the device reads them all, each ring's frames in
// order. Before MQ the device offered neither, and the guest's start
// failed.
func TestMultiQueueTXReadsEveryPair(t *testing.T) {
	const pairs = 4
	p := newPair(t, vhostguest.Options{QueuePairs: pairs})
	if p.d.pairs != pairs {
		t.Fatalf("device sees %d pairs, want %d", p.d.pairs, pairs)
	}
	const each = 5
	for k := range pairs {
		p.g.Use(k)
		for i := range each {
			if p.g.Send([][]byte{udpFlowFrame(1000+k, i)}, nil) != 1 {
				t.Fatalf("pair %d: could not send frame %d", k, i)
			}
		}
	}
	b, sizes := bufs(64, 2048)
	n, more, err := p.d.ReadTX(b, sizes, nil)
	if err != nil || n != pairs*each || more {
		t.Fatalf("ReadTX = %d, more %v, %v; want %d frames", n, more, err, pairs*each)
	}
	next := map[int]int{} // flow: next seq
	for i := range n {
		f := b[i][:sizes[i]]
		port := int(binary.BigEndian.Uint16(f[34:]))
		seq := int(binary.BigEndian.Uint16(f[len(f)-2:]))
		if seq != next[port] {
			t.Fatalf("flow %d: frame %d came after %d: out of order", port, seq, next[port]-1)
		}
		next[port]++
	}
	if len(next) != pairs {
		t.Fatalf("frames of %d flows read, want %d", len(next), pairs)
	}
	// Each pair's count is its TX ring's frames.
	st := p.d.Stats()
	for k := range MaxQueuePairs {
		want := uint64(0)
		if k < pairs {
			want = each
		}
		if st.PairTXFrames[k] != want || st.PairRXFrames[k] != 0 {
			t.Errorf("pair %d counted %d frames read, %d written; want %d and 0", k, st.PairTXFrames[k], st.PairRXFrames[k], want)
		}
	}
}

// On RX the device puts a frame on the ring its flow hashes to: every
// frame of a flow on one ring, in order, and the flows spread over the
// rings; a ring the guest disabled (SET_VRING_ENABLE 0, as QEMU does when
// the guest uses fewer pairs) gets none.
func TestMultiQueueRXKeepsFlowsOnOneRing(t *testing.T) {
	const pairs = 4
	p := newPair(t, vhostguest.Options{QueuePairs: pairs})
	for k := range pairs {
		p.g.Use(k)
		p.g.PostRX(1 << 16)
	}
	const flows, each = 32, 4
	var fs [][]byte
	for i := range each {
		for f := range flows {
			fs = append(fs, udpFlowFrame(2000+f, i))
		}
	}
	for sent := 0; sent < len(fs); {
		n, err := p.d.WriteRX(fs[sent:min(len(fs), sent+32)], nil)
		if err != nil || n == 0 {
			t.Fatalf("WriteRX = %d, %v after %d frames", n, err, sent)
		}
		sent += n
	}
	ringOf := map[int]int{}
	used := 0
	got := 0
	b, sizes := bufs(256, 2048)
	for k := range pairs {
		p.g.Use(k)
		n := p.g.Receive(b, sizes, nil)
		if n > 0 {
			used++
		}
		next := map[int]int{}
		for i := range n {
			f := b[i][:sizes[i]]
			port := int(binary.BigEndian.Uint16(f[34:]))
			seq := int(binary.BigEndian.Uint16(f[len(f)-2:]))
			if r, ok := ringOf[port]; ok && r != k {
				t.Fatalf("flow %d on rings %d and %d", port, r, k)
			}
			ringOf[port] = k
			if seq != next[port] {
				t.Fatalf("ring %d, flow %d: frame %d after %d", k, port, seq, next[port]-1)
			}
			next[port]++
		}
		got += n
		if st := p.d.Stats(); st.PairRXFrames[k] != uint64(n) || st.PairTXFrames[k] != 0 {
			t.Errorf("pair %d counted %d frames written, %d read; its RX ring got %d", k, st.PairRXFrames[k], st.PairTXFrames[k], n)
		}
	}
	if got != len(fs) {
		t.Fatalf("received %d frames, want %d", got, len(fs))
	}
	if used < 2 {
		t.Fatalf("%d flows all on %d ring(s) of %d", flows, used, pairs)
	}

	// Pair 3's RX ring disabled: the flows move to the other rings.
	if err := p.g.Message(vhostguest.ReqSetVringEnable, vhostguest.FlagVersion1, statep(6, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.d.HandleSocket(); err != nil {
		t.Fatal(err)
	}
	if p.d.q[6].enabled {
		t.Fatal("ring 6 still enabled")
	}
	for sent := 0; sent < len(fs); {
		n, err := p.d.WriteRX(fs[sent:min(len(fs), sent+32)], nil)
		if err != nil || n == 0 {
			t.Fatalf("WriteRX = %d, %v after %d frames, ring 6 disabled", n, err, sent)
		}
		sent += n
	}
	p.g.Use(3)
	if n := p.g.Receive(b, sizes, nil); n != 0 {
		t.Fatalf("the disabled ring 6 got %d frames", n)
	}
}

// flowHash: one flow's frames hash alike whatever their payload; frames
// of other flows, or not IP, still hash; nothing is read past a short
// frame.
func TestFlowHash(t *testing.T) {
	if flowHash(udpFlowFrame(7, 0)) != flowHash(udpFlowFrame(7, 99)) {
		t.Fatal("two frames of one flow hash differently")
	}
	seen := map[uint32]bool{}
	for port := range 64 {
		seen[flowHash(udpFlowFrame(port, 0))%8] = true
	}
	if len(seen) < 6 {
		t.Fatalf("64 flows reach %d of 8 rings", len(seen))
	}
	full := udpFlowFrame(1, 0)
	for n := range len(full) + 1 {
		_ = flowHash(full[:n]) // must not read past the frame
	}
	ip6 := make([]byte, 14+40+8)
	ip6[12], ip6[13], ip6[14+6] = 0x86, 0xdd, 6
	_ = flowHash(ip6)
}

// A frame's flow hash allocates nothing.
func TestFlowHashAllocatesNothing(t *testing.T) {
	f := udpFlowFrame(1, 0)
	if a := testing.AllocsPerRun(100, func() { _ = flowHash(f) }); a != 0 {
		t.Fatalf("%v allocations", a)
	}
}

// BenchmarkRXMultiQueue is BenchmarkRX for a guest with 4 queue pairs:
// 32 frames of 32 flows per batch, each put on its flow's ring (a run of
// frames for one ring is written and published at a time, and each ring
// called once). The guest does not read its call eventfds here: with 8
// of them, those reads were most of the time measured.
func BenchmarkRXMultiQueue(b *testing.B) {
	const pairs = 4
	p := newPair(b, vhostguest.Options{QueuePairs: pairs})
	var fs [][]byte
	for f := range benchBatch {
		fs = append(fs, append(udpFlowFrame(3000+f, 0), make([]byte, 6)...)) // 64 bytes
	}
	got, sizes := bufs(benchBatch, 2048)
	b.ReportAllocs()
	b.SetBytes(int64(64 * benchBatch))
	for b.Loop() {
		for k := range pairs {
			p.g.Use(k)
			p.g.PostRX(benchBatch)
		}
		if n, err := p.d.WriteRX(fs, nil); n != benchBatch || err != nil {
			b.Fatalf("WriteRX = %d, %v", n, err)
		}
		for k := range pairs {
			p.g.Use(k)
			p.g.Receive(got, sizes, nil)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/frame")
}
