package vhostuser

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/vknetd/vknetd/internal/hang"
)

// Ring indices are free-running 16-bit counters: a guest that has sent
// 65,536 frames has wrapped its avail idx, and the distance from our
// lastAvail to it is only right modulo 2^16. These tests start the rings
// just short of the wrap, as a long-lived guest's are sooner or later.

// startAt moves the image's rings to idx, as a guest and a device that
// have moved idx entries through them see them: both avail and used idx
// there, nothing pending.
func (im *image) startAt(idx uint16) {
	im.q.reset(im.num, idx, im.q.eventIdx)
	im.setAvailIdx(idx)
	binary.LittleEndian.PutUint16(im.mem[im.used+2:], idx)
}

func (im *image) usedIdx() uint16 { return binary.LittleEndian.Uint16(im.mem[im.used+2:]) }

// usedEntry is the id and length of used entry idx (modulo the ring).
func (im *image) usedEntry(idx uint16) (id, n uint32) {
	off := im.used + 4 + 8*int(idx&uint16(im.num-1))
	return binary.LittleEndian.Uint32(im.mem[off:]), binary.LittleEndian.Uint32(im.mem[off+4:])
}

// wrapCases start at and around the wrap: per entries a batch, enough
// batches to cross it, a full ring at once among them.
var wrapCases = []struct {
	num  int
	base uint16
	per  int
}{
	{8, 0xfffe, 4},  // the probe's: 4 frames posted at 65534 take the idx to 2
	{8, 0xffff, 1},  // one at a time through 65535 and 0
	{8, 0xfff8, 8},  // a full ring ending exactly at the wrap, then the next
	{8, 0xfffb, 8},  // a full ring across it
	{16, 0xfff0, 5}, // batches that do not divide the ring
	{256, 0xff80, 200},
}

// TestTXAcrossTheWrap: frames posted across the wrap of the avail idx are
// all taken, in order, once each, and returned in the used ring at the
// right entries; the used idx wraps with them.
func TestTXAcrossTheWrap(t *testing.T) {
	for _, c := range wrapCases {
		t.Run(fmt.Sprintf("%d entries from %d, %d a batch", c.num, c.base, c.per), func(t *testing.T) {
			defer hang.Guard(t, hang.Ring)()
			im := newImage(t, c.num, 1<<20)
			im.startAt(c.base)
			idx := c.base
			b, s := bufs(c.per, 2048)
			for {
				var want [][]byte
				for i := 0; i < c.per; i++ {
					f := frame(60+i, int(idx)+i)
					off := 2048 * i
					clear(im.mem[im.data+off : im.data+off+12]) // the header: asks for nothing
					copy(im.mem[im.data+off+12:], f)
					// Descriptors in reverse order, so a used entry's id
					// tells which chain it returns.
					d := c.num - 1 - i
					im.setDesc(d, im.addr(off), uint32(12+len(f)), 0, 0)
					im.post(uint16(d))
					want = append(want, f)
				}
				var st Stats
				n, more, _, err := im.q.readBatch(&im.m, &txRules{hdrLen: 12}, b, s, nil, &st)
				if n != c.per || more || err != nil {
					t.Fatalf("at idx %d: readBatch = %d, more %v, %v; want the %d frames posted", idx, n, more, err, c.per)
				}
				for i, f := range want {
					if !bytes.Equal(b[i][:s[i]], f) {
						t.Fatalf("at idx %d: frame %d is %d bytes, not the %d-byte frame posted", idx, i, s[i], len(f))
					}
				}
				for i := 0; i < c.per; i++ {
					if id, _ := im.usedEntry(idx + uint16(i)); id != uint32(c.num-1-i) {
						t.Fatalf("used entry %d returns chain %d, want %d", idx+uint16(i), id, c.num-1-i)
					}
				}
				idx += uint16(c.per)
				if im.q.lastAvail != idx || im.usedIdx() != idx {
					t.Fatalf("after the batch: last avail %d, used idx %d, want both %d", im.q.lastAvail, im.usedIdx(), idx)
				}
				// Nothing more: the ring is empty and says so.
				if n, more, _, err := im.q.readBatch(&im.m, &txRules{hdrLen: 12}, b, s, nil, &st); n != 0 || more || err != nil {
					t.Fatalf("at idx %d with nothing posted: readBatch = %d, more %v, %v", idx, n, more, err)
				}
				if idx < c.base && idx >= uint16(2*c.num) {
					break // well past the wrap
				}
			}
			if !im.canariesIntact() {
				t.Fatal("wrote outside guest memory")
			}
		})
	}
}

// TestRXAcrossTheWrap: buffers posted across the wrap of the avail idx
// are filled, each once, and no frame goes into an entry the guest has not
// posted: with more frames than buffers the batch stops at the buffers.
func TestRXAcrossTheWrap(t *testing.T) {
	for _, c := range wrapCases {
		t.Run(fmt.Sprintf("%d entries from %d, %d a batch", c.num, c.base, c.per), func(t *testing.T) {
			defer hang.Guard(t, hang.Ring)()
			im := newImage(t, c.num, 1<<20)
			im.q.index = RXQ
			im.startAt(c.base)
			idx := c.base
			for {
				for i := 0; i < c.per; i++ {
					d := c.num - 1 - i
					im.setDesc(d, im.addr(2048*i), 2048, descFWrite, 0)
					im.post(uint16(d))
				}
				fs := frames(c.per+2, 1000)
				for i := range fs {
					fs[i][0] = byte(idx) + byte(i)
				}
				var st Stats
				n, _, err := im.q.writeBatch(&im.m, 12, true, fs, nil, &st)
				if n != c.per || err != nil {
					t.Fatalf("at idx %d with %d buffers posted: writeBatch took %d of %d frames, %v", idx, c.per, n, len(fs), err)
				}
				for i := 0; i < c.per; i++ {
					id, size := im.usedEntry(idx + uint16(i))
					if id != uint32(c.num-1-i) || size != 12+1000 {
						t.Fatalf("used entry %d: chain %d, %d bytes; want chain %d, %d bytes", idx+uint16(i), id, size, c.num-1-i, 12+1000)
					}
					got := im.mem[im.data+2048*i:]
					if got[10] != 1 || got[11] != 0 || !bytes.Equal(got[12:12+1000], fs[i]) {
						t.Fatalf("buffer %d at idx %d does not hold frame %d after a header of one buffer", i, idx, i)
					}
				}
				idx += uint16(c.per)
				if im.q.lastAvail != idx || im.usedIdx() != idx {
					t.Fatalf("after the batch: last avail %d, used idx %d, want both %d", im.q.lastAvail, im.usedIdx(), idx)
				}
				if idx < c.base && idx >= uint16(2*c.num) {
					break // well past the wrap
				}
			}
			if !im.canariesIntact() {
				t.Fatal("wrote outside guest memory")
			}
		})
	}
}

// TestRXFrameWaitsForBuffersAcrossTheWrap: a frame that needs two buffers
// (MRG_RXBUF) when the guest has posted one, its avail idx just wrapped,
// waits for the second: the stale entry after the one posted is the
// guest's from its last lap round the ring, not a buffer to fill.
func TestRXFrameWaitsForBuffersAcrossTheWrap(t *testing.T) {
	defer hang.Guard(t, hang.Ring)()
	const num = 8
	im := newImage(t, num, 64<<10)
	im.q.index = RXQ
	im.startAt(0xffff)
	// The last lap left descriptor 1, a good buffer, in avail slot 0.
	im.setDesc(1, im.addr(4096), 2048, descFWrite, 0)
	binary.LittleEndian.PutUint16(im.mem[im.avail+4:], 1)
	im.setDesc(0, im.addr(0), 2048, descFWrite, 0)
	im.post(0) // slot 7; the avail idx wraps to 0
	big := [][]byte{frame(3000, 5)}
	var st Stats
	if n, _, err := im.q.writeBatch(&im.m, 12, true, big, nil, &st); n != 0 || err != nil {
		t.Fatalf("with one of the two buffers it needs posted, writeBatch took the frame (%d, %v): it filled an entry the guest never posted", n, err)
	}
	if im.q.lastAvail != 0xffff || im.usedIdx() != 0xffff {
		t.Fatalf("last avail %d, used idx %d: something was taken", im.q.lastAvail, im.usedIdx())
	}
	im.post(1)
	if n, _, err := im.q.writeBatch(&im.m, 12, true, big, nil, &st); n != 1 || err != nil {
		t.Fatalf("with both buffers posted, writeBatch = %d, %v", n, err)
	}
	if nb := binary.LittleEndian.Uint16(im.mem[im.data+10:]); nb != 2 || im.usedIdx() != 1 {
		t.Fatalf("num_buffers %d, used idx %d; want 2 buffers used, idx 1", nb, im.usedIdx())
	}
}
