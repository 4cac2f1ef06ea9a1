package vhostuser

import (
	"bytes"
	"testing"

	"github.com/vknetd/vknetd/internal/hang"
)

// twoRegions splits an image's memory into two adjacent regions at cut,
// as a hugepage-backed guest's memory is split.
func (im *image) twoRegions(cut int) {
	im.m = memory{}
	im.m.add(Region{GuestAddr: imageBase, Size: uint64(cut), UserAddr: 0x7000000}, im.mem[:cut])
	im.m.add(Region{GuestAddr: imageBase + uint64(cut), Size: uint64(len(im.mem) - cut), UserAddr: 0x8000000}, im.mem[cut:])
}

// TestChainWalkerSegments: the walker yields each descriptor's bytes as
// views of the memory itself, one per region a descriptor lies in, skips
// zero-length descriptors (paying for them), and says where the chain
// ends.
func TestChainWalkerSegments(t *testing.T) {
	defer hang.Guard(t, hang.Ring)()
	im := newImage(t, 8, 16<<10)
	cut := im.data + 1000
	im.twoRegions(cut)
	im.setDesc(0, im.addr(0), 100, descFNext, 1)
	im.setDesc(1, im.addr(100), 0, descFNext, 2)   // empty: skipped
	im.setDesc(2, im.addr(900), 300, descFNext, 3) // 100 bytes before the cut, 200 after
	im.setDesc(3, im.addr(2000), 50, 0, 0)
	budget := 8
	var w chainWalker
	w.start(&im.q, &im.m, 0, false, &budget)
	want := []struct{ off, n int }{{0, 100}, {900, 100}, {1000, 200}, {2000, 50}}
	for i, s := range want {
		seg, ok, err := w.segment()
		if !ok || err != nil {
			t.Fatalf("segment %d: ok %v, %v", i, ok, err)
		}
		at := im.data + s.off
		if len(seg) != s.n || &seg[0] != &im.mem[at] {
			t.Fatalf("segment %d: %d bytes, want %d at data offset %d", i, len(seg), s.n, s.off)
		}
		if i < len(want)-1 != w.more() {
			t.Fatalf("segment %d: more %v", i, w.more())
		}
	}
	if _, ok, err := w.segment(); ok || err != nil {
		t.Fatalf("past the end: ok %v, %v", ok, err)
	}
	if budget != 4 || im.q.walked != 4 {
		t.Fatalf("budget left %d, walked %d; want 4 descriptors paid", budget, im.q.walked)
	}
}

// TestHeaderAcrossRegions: a TX frame and an RX buffer whose one
// descriptor runs across a region boundary inside the virtio-net header
// carry it whole, and num_buffers lands on the far side.
func TestHeaderAcrossRegions(t *testing.T) {
	defer hang.Guard(t, hang.Ring)()
	im := newImage(t, 8, 16<<10)
	im.twoRegions(im.data + 11) // header bytes 0..10 in the first region, 11 in the second
	f := frame(60, 3)
	copy(im.mem[im.data+12:], f)
	im.setDesc(0, im.addr(0), 12+60, 0, 0)
	im.post(0)
	b, s := bufs(1, 2048)
	if n, _, _, err := im.q.readBatch(&im.m, &txRules{hdrLen: 12}, b, s, nil, &Stats{}); n != 1 || err != nil || !bytes.Equal(b[0][:s[0]], f) {
		t.Fatalf("TX: %d frames, %v", n, err)
	}

	rx := newImage(t, 8, 16<<10)
	rx.q.index = RXQ
	rx.twoRegions(rx.data + 11)
	for i := range 2 {
		rx.setDesc(i, rx.addr(4096*i), 1000, descFWrite, 0)
		rx.post(uint16(i))
	}
	big := frame(1500, 9)
	if n, _, err := rx.q.writeBatch(&rx.m, 12, true, [][]byte{big}, nil, &Stats{}); n != 1 || err != nil {
		t.Fatalf("RX: %d frames, %v", n, err)
	}
	if got := rx.mem[rx.data+10 : rx.data+12]; got[0] != 2 || got[1] != 0 || !bytes.Equal(rx.mem[rx.data+12:rx.data+1000], big[:988]) {
		t.Fatalf("RX: num_buffers % x, want 02 00, and the frame after the header", got)
	}
}
