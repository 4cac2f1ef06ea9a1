package vhostuser

import (
	"encoding/binary"
	"errors"
	"testing"
)

// A ring resumed after a crash goes on from the used idx in guest memory,
// whatever the lost indices were; one that no guest and device could
// have left (used idx ahead of avail idx, or more than the queue size
// behind it) is refused, and nothing outside the ring is touched.
func TestResumeFromUsed(t *testing.T) {
	const num = 8
	for _, c := range []struct {
		name        string
		avail, used uint16
		ok          bool
	}{
		{"all used", 5, 5, true},
		{"some waiting", 7, 3, true},
		{"a whole ring waiting", 11, 3, true},
		{"across the wrap", 2, 0xfffc, true},
		{"a whole ring across the wrap", 4, 0xfffc, true},
		{"one past a whole ring", 12, 3, false},
		{"used ahead of avail", 3, 4, false},
		{"used far ahead", 3, 0x8000, false},
		{"used half the index space behind", 0x8003, 3, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			im := newImage(t, num, 4096)
			im.q.lastAvail, im.q.usedIdx = 1234, 1234 // the lost process's, stale
			im.q.kicksAllowed = false
			im.setAvailIdx(c.avail)
			binary.LittleEndian.PutUint16(im.mem[im.used+2:], c.used)
			err := im.q.resumeFromUsed()
			switch {
			case c.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !c.ok && !errors.Is(err, ErrViolation):
				t.Fatalf("avail idx %d, used idx %d: %v, want a violation", c.avail, c.used, err)
			case c.ok:
				if im.q.lastAvail != c.used || im.q.usedIdx != c.used {
					t.Fatalf("resumed at avail %d used %d, want both %d", im.q.lastAvail, im.q.usedIdx, c.used)
				}
				if !im.q.kicksAllowed || binary.LittleEndian.Uint16(im.mem[im.used+4+8*num:]) != c.avail {
					t.Fatalf("kicks not asked for at avail idx %d", c.avail)
				}
				if n, err := im.q.pending(); err != nil || n != int(c.avail-c.used) {
					t.Fatalf("pending %d (%v), want %d", n, err, c.avail-c.used)
				}
			}
			if !im.canariesIntact() {
				t.Fatal("wrote outside guest memory")
			}
		})
	}
}

// FuzzResumeFromUsed: whatever the guest left in its ring indices,
// resuming either refuses with a violation or leaves a ring whose pending
// entries are at most the queue size, and never touches memory outside
// the ring.
func FuzzResumeFromUsed(f *testing.F) {
	f.Add(uint16(5), uint16(5), uint8(3))
	f.Add(uint16(2), uint16(0xfffc), uint8(3))
	f.Add(uint16(3), uint16(4), uint8(8))
	f.Fuzz(func(t *testing.T, avail, used uint16, logNum uint8) {
		num := 1 << (logNum % 9) // 1 to 256 entries
		im := newImage(t, num, 16*num+6+2*num+8+6+8*num+64)
		im.setAvailIdx(avail)
		binary.LittleEndian.PutUint16(im.mem[im.used+2:], used)
		err := im.q.resumeFromUsed()
		ok := int(avail-used) <= num
		switch {
		case ok && err != nil:
			t.Fatalf("num %d avail %d used %d refused: %v", num, avail, used, err)
		case !ok && !errors.Is(err, ErrViolation):
			t.Fatalf("num %d avail %d used %d: %v, want a violation", num, avail, used, err)
		case ok:
			if n, err := im.q.pending(); err != nil || n != int(avail-used) {
				t.Fatalf("pending %d (%v), want %d", n, err, avail-used)
			}
		}
		if !im.canariesIntact() {
			t.Fatal("wrote outside guest memory")
		}
	})
}
