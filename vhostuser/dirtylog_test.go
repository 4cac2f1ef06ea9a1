package vhostuser

import (
	"fmt"
	"slices"
	"testing"

	"github.com/vknetd/vknetd/internal/hang"
)

// testLog is a dirty log over a plain slice: size bytes of bitmap off
// bytes into mem, with canaries on both sides of the bitmap.
func testLog(off, size int) (*dirtyLog, []byte) {
	mem := make([]byte, (off+size+8+4095)&^4095)
	for i := range mem {
		mem[i] = canary
	}
	clear(mem[off : off+size])
	return &dirtyLog{mem: mem, off: uint64(off), size: uint64(size)}, mem
}

// dirtyPages lists the pages whose bits are set, reading the bitmap as
// the front-end does (bit p%8 of byte p/8), and fails the test if a byte
// outside the bitmap changed.
func dirtyPages(t *testing.T, l *dirtyLog) []uint64 {
	t.Helper()
	for i, b := range l.mem {
		if (uint64(i) < l.off || uint64(i) >= l.off+l.size) && b != canary {
			t.Fatalf("byte %d, outside the bitmap at %d+%d, was written", i, l.off, l.size)
		}
	}
	var pages []uint64
	for i, b := range l.mem[l.off : l.off+l.size] {
		for bit := range 8 {
			if b&(1<<bit) != 0 {
				pages = append(pages, uint64(8*i+bit))
			}
		}
	}
	return pages
}

func pageRange(first, last uint64) []uint64 {
	var p []uint64
	for ; first <= last; first++ {
		p = append(p, first)
	}
	return p
}

// TestDirtyLogMark: a write marks every page it touches and no other, at
// page boundaries and across them, whatever the bitmap's offset in its
// mapping (the word ORed is the aligned one around the byte); a page past
// the bitmap is not marked, and nothing outside the bitmap is written.
func TestDirtyLogMark(t *testing.T) {
	cases := []struct {
		gpa, n uint64
		want   []uint64
	}{
		{0, 1, []uint64{0}},
		{4095, 1, []uint64{0}},
		{4095, 2, []uint64{0, 1}},
		{4096, 4096, []uint64{1}},
		{4096, 4097, []uint64{1, 2}},
		{7 * 4096, 2 * 4096, []uint64{7, 8}},    // across a byte of the bitmap
		{31*4096 + 4000, 200, []uint64{31, 32}}, // across a word
		{100 * 4096, 3*4096 + 1, pageRange(100, 103)},
		{0x12345, 0, nil},
		{8 * 64 * 4096, 1, nil},                      // the first page past a 64-byte bitmap
		{8*64*4096 - 4096, 8192, []uint64{8*64 - 1}}, // its last page, and one past
		{1<<64 - 4096, 4096, nil},                    // far past
	}
	for _, off := range []int{0, 1, 2, 3, 4, 4093} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("off %d, %#x+%#x", off, c.gpa, c.n), func(t *testing.T) {
				l, _ := testLog(off, 64)
				l.mark(c.gpa, c.n)
				l.mark(c.gpa, c.n) // again: a set bit stays set, nothing else moves
				if got := dirtyPages(t, l); !slices.Equal(got, c.want) {
					t.Fatalf("pages %v marked, want %v", got, c.want)
				}
			})
		}
	}
	l := dirtyLog{size: 64}
	if !l.covers(8*64*4096) || l.covers(8*64*4096+1) || !l.covers(0) {
		t.Fatal("covers is wrong at the log's end")
	}
}

// logImage gives an image's ring a log covering guest addresses up to
// 8 MiB, its used ring logged at usedLog (not where it lies: the log
// address from SET_VRING_ADDR is what counts).
func logImage(im *image, usedLog uint64) *dirtyLog {
	l, _ := testLog(3, 8<<20/4096/8)
	im.q.log, im.q.logUsedRing, im.q.usedLogAddr = l, true, usedLog
	return l
}

func page(gpa uint64) uint64 { return gpa / 4096 }

// TestRXDirtyLog: with logging on, an RX batch marks the pages of the
// bytes it wrote (headers and frames, not the rest of the buffers), the
// used entries it filled and the used idx, at the ring's log address.
func TestRXDirtyLog(t *testing.T) {
	defer hang.Guard(t, hang.Ring)()
	im := newImage(t, 8, 1<<20)
	im.q.index = RXQ
	usedLog := uint64(0x400000 - 20) // idx and entries 0-1 in one page, 2-7 in the next
	l := logImage(im, usedLog)
	base := (im.addr(0) + 4095) &^ 4095
	// Buffer 0 ends its frame inside its page; buffer 1's frame runs into
	// the next page; buffers 2 and 3 (MRG_RXBUF) take one superframe.
	bufAt := []uint64{base + 4000, base + 3*4096 + 4000, base + 6*4096, base + 9*4096}
	for i, a := range bufAt {
		im.setDesc(i, a, 2048, descFWrite, 0)
		im.post(uint16(i))
	}
	fs := [][]byte{frame(60, 0), frame(1514, 1), frame(3000, 2)}
	if n, _, err := im.q.writeBatch(&im.m, 12, true, fs, nil, &Stats{}); n != 3 || err != nil {
		t.Fatalf("writeBatch = %d, %v", n, err)
	}
	want := []uint64{
		page(base),                     // 72 bytes from 4000
		page(base) + 3, page(base) + 4, // 1526 bytes from 4000
		page(base) + 6,                   // 2048 bytes from 0
		page(base) + 9,                   // the superframe's other 964 bytes
		page(usedLog), page(usedLog) + 1, // idx, entries 0-1; entry 2 in the next page
	}
	slices.Sort(want)
	if got := dirtyPages(t, l); !slices.Equal(got, want) {
		t.Fatalf("pages %v marked, want %v", got, want)
	}
}

// TestTXDirtyLog: TX writes nothing of the guest's but the used ring: its
// entries, wrapping round the ring, and the idx are marked; the frames
// read are not.
func TestTXDirtyLog(t *testing.T) {
	defer hang.Guard(t, hang.Ring)()
	const num = 1024
	im := newImage(t, num, 1<<20)
	im.startAt(0xfffe) // slots 1022, 1023, then 0, 1
	// idx in page 0x3ff, entries 0-510 in 0x400, 511-1023 in 0x401,
	// avail_event (written as the batch allows kicks again) in 0x402.
	usedLog := uint64(0x400000 - 4)
	l := logImage(im, usedLog)
	for i := range 4 {
		im.setDesc(i, im.addr(2048*i), 12+60, 0, 0)
		im.post(uint16(i))
	}
	b, s := bufs(4, 2048)
	if n, _, _, err := im.q.readBatch(&im.m, &txRules{hdrLen: 12}, b, s, nil, &Stats{}); n != 4 || err != nil {
		t.Fatalf("readBatch = %d, %v", n, err)
	}
	if got, want := dirtyPages(t, l), []uint64{0x3ff, 0x400, 0x401, 0x402}; !slices.Equal(got, want) {
		t.Fatalf("pages %v marked, want %v", got, want)
	}
}

// TestUsedRingNotLogged: without VHOST_VRING_F_LOG only the buffers are
// marked.
func TestUsedRingNotLogged(t *testing.T) {
	im := newImage(t, 8, 1<<20)
	im.q.index = RXQ
	l := logImage(im, 0x400000)
	im.q.logUsedRing = false
	im.setDesc(0, im.addr(0), 2048, descFWrite, 0)
	im.post(0)
	if n, _, err := im.q.writeBatch(&im.m, 12, true, frames(1, 60), nil, &Stats{}); n != 1 || err != nil {
		t.Fatalf("writeBatch = %d, %v", n, err)
	}
	if got, want := dirtyPages(t, l), []uint64{page(im.addr(0))}; !slices.Equal(got, want) {
		t.Fatalf("pages %v marked, want %v", got, want)
	}
}
