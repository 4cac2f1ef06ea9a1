package vhostuser

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/vknetd/vknetd/internal/hang"
)

// With EVENT_IDX the guest says in used_event which used entry it wants
// to hear about: a batch calls it only when the used idx crosses that
// entry (virtio 1.x, vring_need_event), and a guest that polls keeps
// used_event ahead and is never called. Without EVENT_IDX the
// NO_INTERRUPT flag says the same for every entry.

func (im *image) setUsedEvent(v uint16) {
	binary.LittleEndian.PutUint16(im.mem[im.avail+4+2*im.num:], v)
}

func (im *image) setAvailFlags(v uint16) { binary.LittleEndian.PutUint16(im.mem[im.avail:], v) }

// batchOfTwo moves two entries through the image's ring as the queue's
// side would (a TX batch of two frames, or an RX batch into two buffers)
// and returns whether the guest is to be called.
func batchOfTwo(t *testing.T, im *image, rx bool) bool {
	t.Helper()
	var st Stats
	for i := 0; i < 2; i++ {
		if rx {
			im.setDesc(i, im.addr(2048*i), 2048, descFWrite, 0)
		} else {
			clear(im.mem[im.data+2048*i : im.data+2048*i+12])
			im.setDesc(i, im.addr(2048*i), 12+60, 0, 0)
		}
		im.post(uint16(i))
	}
	if rx {
		n, call, err := im.q.writeBatch(&im.m, 12, true, frames(2, 60), nil, &st)
		if n != 2 || err != nil {
			t.Fatalf("writeBatch = %d, %v", n, err)
		}
		return call
	}
	b, s := bufs(2, 2048)
	n, _, call, err := im.q.readBatch(&im.m, &txRules{hdrLen: 12}, b, s, nil, &st)
	if n != 2 || err != nil {
		t.Fatalf("readBatch = %d, %v", n, err)
	}
	return call
}

// TestEventIdxSuppressesCalls: a guest whose used_event is ahead of every
// batch gets no call; one whose used_event a batch crosses gets one, and
// one whose used_event is the batch's new used idx (not crossed yet) none.
// Near the wrap of the 16-bit indices too.
func TestEventIdxSuppressesCalls(t *testing.T) {
	for _, rx := range []bool{false, true} {
		for _, start := range []uint16{0, 0xfff9} {
			t.Run(fmt.Sprintf("rx %v from %d", rx, start), func(t *testing.T) {
				defer hang.Guard(t, hang.Ring)()
				im := newImage(t, 8, 64<<10)
				if rx {
					im.q.index = RXQ
				}
				im.startAt(start)
				idx := start
				// A polling guest: used_event far ahead, never crossed.
				im.setUsedEvent(start + 1000)
				calls := 0
				for i := 0; i < 10; i++ {
					if batchOfTwo(t, im, rx) {
						calls++
					}
					idx += 2
				}
				if calls != 0 {
					t.Fatalf("%d calls over 10 batches with used_event ahead of them all, want 0", calls)
				}
				// used_event inside the next batch's two entries: crossed.
				for _, ahead := range []uint16{0, 1} {
					ev := idx + ahead
					im.setUsedEvent(ev)
					if !batchOfTwo(t, im, rx) {
						t.Fatalf("no call for used entries %d..%d with used_event %d", idx, idx+1, ev)
					}
					idx += 2
				}
				// used_event the batch's new used idx, and behind the batch
				// (the guest heard of those entries already): not crossed.
				for _, ahead := range []uint16{2, 0xffff} {
					ev := idx + ahead
					im.setUsedEvent(ev)
					if batchOfTwo(t, im, rx) {
						t.Fatalf("a call for used entries %d..%d with used_event %d, which they do not cross", idx, idx+1, ev)
					}
					idx += 2
				}
			})
		}
	}
}

// TestNoInterruptFlagSuppressesCalls: without EVENT_IDX, a guest with
// NO_INTERRUPT set gets no call and one with it clear a call per batch.
func TestNoInterruptFlagSuppressesCalls(t *testing.T) {
	for _, rx := range []bool{false, true} {
		t.Run(fmt.Sprintf("rx %v", rx), func(t *testing.T) {
			defer hang.Guard(t, hang.Ring)()
			im := newImage(t, 8, 64<<10)
			if rx {
				im.q.index = RXQ
			}
			im.q.reset(8, 0, false)
			im.setAvailFlags(availFNoInterrupt)
			for i := 0; i < 10; i++ {
				if batchOfTwo(t, im, rx) {
					t.Fatalf("batch %d called a guest that set NO_INTERRUPT", i)
				}
			}
			im.setAvailFlags(0)
			if !batchOfTwo(t, im, rx) {
				t.Fatal("no call for a guest that cleared NO_INTERRUPT")
			}
		})
	}
}
