package vhostuser

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/vknetd/vknetd/internal/hang"
)

// Issue 15, finding 1: whatever a guest writes in its rings, one call
// costs steps in proportion to the queue size and the frames it moves,
// never the queue size squared. Costs are counted in descriptors walked
// (virtq.walked), not timed.

// budgetImage is an image of num entries with room for a chain through
// every descriptor of the table and a data area of 64 KiB.
func budgetImage(t *testing.T, num int, rx bool) *image {
	t.Helper()
	im := newImage(t, num, 26*num+64+(128<<10))
	if rx {
		im.q.index = RXQ
	}
	return im
}

// chain links descriptors first..first+n-1 into one chain, each of size
// bytes (all at the same address: the walk's cost does not depend on it).
func (im *image) chain(first, n int, size uint32, flags uint16) {
	for i := first; i < first+n; i++ {
		f, next := flags, uint16(0)
		if i < first+n-1 {
			f |= descFNext
			next = uint16(i + 1)
		}
		im.setDesc(i, im.addr(0), size, f, next)
	}
}

// TestOneChainInEveryEntry is the guest of finding 1: every avail entry
// names the head of one chain through the whole descriptor table, of
// zero-length descriptors or of one-byte ones. TX used to walk it once per
// entry (32768 x 32768 steps per kick); RX once per frame flooded to the
// guest, or once per entry with MRG_RXBUF, and never took it. Now the
// guest is closed after at most the queue size in steps.
func TestOneChainInEveryEntry(t *testing.T) {
	for _, num := range []int{8, 256, maxQueueSize} {
		for _, size := range []uint32{0, 1} {
			for _, mode := range []string{"tx", "rx", "rx-mrg"} {
				t.Run(fmt.Sprintf("%d/%dB/%s", num, size, mode), func(t *testing.T) {
					defer hang.Guard(t, hang.Ring)()
					rx := mode != "tx"
					im := budgetImage(t, num, rx)
					flags := uint16(0)
					if rx {
						flags = descFWrite
					}
					im.chain(0, num, size, flags)
					for range num {
						im.post(0)
					}
					var err error
					var st Stats
					if rx {
						_, _, err = im.q.writeBatch(&im.m, 12, mode == "rx-mrg", frames(64, 1514), nil, &st)
					} else {
						b, s := bufs(64, 2048)
						_, _, _, err = im.q.readBatch(&im.m, &txRules{hdrLen: 12}, b, s, nil, &st)
					}
					// The one honest reading: without MRG_RXBUF a chain of
					// num one-byte buffers is a buffer too small for the
					// frames, dropped (after one walk).
					small := mode == "rx" && size == 1 && num > 12
					if !errors.Is(err, ErrViolation) && !(small && err == nil && st.RXOversize == 64) {
						t.Fatalf("err = %v, want a violation (stats %+v)", err, st)
					}
					t.Logf("%v (stats %+v) after %d descriptors", err, st, im.q.walked)
					if im.q.walked > uint64(num)+1 {
						t.Fatalf("walked %d descriptors, want at most the queue size %d + 1", im.q.walked, num)
					}
					if !im.canariesIntact() {
						t.Fatal("wrote outside guest memory")
					}
				})
			}
		}
	}
}

// TestEmptyDescriptors: up to maxEmptyDescs zero-length descriptors in a
// chain are legal; one more closes the guest, on TX and RX.
func TestEmptyDescriptors(t *testing.T) {
	defer hang.Guard(t, hang.Ring)()
	for _, rx := range []bool{false, true} {
		for _, empties := range []int{maxEmptyDescs, maxEmptyDescs + 1} {
			im := budgetImage(t, 256, rx)
			flags := uint16(0)
			if rx {
				flags = descFWrite
			}
			im.chain(0, empties+1, 0, flags)
			im.setDesc(empties, im.addr(0), 2048, flags, 0) // the chain's last: room for a frame
			im.post(0)
			var err error
			var n int
			if rx {
				n, _, err = im.q.writeBatch(&im.m, 12, false, frames(1, 1514), nil, &Stats{})
			} else {
				b, s := bufs(1, 2048)
				n, _, _, err = im.q.readBatch(&im.m, &txRules{hdrLen: 12}, b, s, nil, &Stats{})
			}
			switch {
			case empties <= maxEmptyDescs && (err != nil || n != 1):
				t.Errorf("rx %v, %d zero-length descriptors: %d frames, %v; want the frame", rx, empties, n, err)
			case empties > maxEmptyDescs && (!errors.Is(err, ErrViolation) || !strings.Contains(err.Error(), "zero-length")):
				t.Errorf("rx %v, %d zero-length descriptors: err = %v, want a violation", rx, empties, err)
			}
		}
	}
}

// TestOversizeStopsTheWalk: a TX frame too long for any buffer is dropped
// once it is known to be, without walking the rest of its chain.
func TestOversizeStopsTheWalk(t *testing.T) {
	defer hang.Guard(t, hang.Ring)()
	im := budgetImage(t, maxQueueSize, false)
	im.chain(0, maxQueueSize, 1, 0)
	im.post(0)
	b, s := bufs(1, 2048)
	var st Stats
	n, _, _, err := im.q.readBatch(&im.m, &txRules{hdrLen: 12}, b, s, nil, &st)
	if n != 0 || err != nil || st.TXOversize != 1 {
		t.Fatalf("readBatch = %d, %v, stats %+v; want the frame dropped as oversize", n, err, st)
	}
	if im.q.walked > 12+2048+1 {
		t.Fatalf("walked %d descriptors for a frame known too long after %d", im.q.walked, 12+2048+1)
	}
}

// TestHonestRingsFitTheBudget: a guest that spends its whole descriptor
// table on chains in flight is within the budget, both ways.
func TestHonestRingsFitTheBudget(t *testing.T) {
	defer hang.Guard(t, hang.Ring)()
	for _, num := range []int{8, 256, maxQueueSize} {
		// TX: num/4 frames of four descriptors each (header, three pieces).
		tx := budgetImage(t, num, false)
		for c := 0; c < num/4; c++ {
			tx.setDesc(4*c, tx.addr(0), 12, descFNext, uint16(4*c+1))
			tx.setDesc(4*c+1, tx.addr(100), 20, descFNext, uint16(4*c+2))
			tx.setDesc(4*c+2, tx.addr(200), 20, descFNext, uint16(4*c+3))
			tx.setDesc(4*c+3, tx.addr(300), 20, 0, 0)
			tx.post(uint16(4 * c))
		}
		b, s := bufs(num/4, 128)
		var st Stats
		if n, _, _, err := tx.q.readBatch(&tx.m, &txRules{hdrLen: 12}, b, s, nil, &st); n != num/4 || err != nil {
			t.Fatalf("%d: TX took %d of %d frames: %v", num, n, num/4, err)
		}
		// RX with MRG_RXBUF: num one-descriptor buffers of 1526 bytes,
		// filled by superframes of 43 buffers each and plain frames.
		rx := budgetImage(t, num, true)
		for i := range num {
			rx.setDesc(i, rx.addr(0), 1526, descFWrite, 0)
			rx.post(uint16(i))
		}
		var fs [][]byte
		for used, i := 0, 0; used < num; i++ {
			size := 1514
			if i%8 == 0 && used+43 <= num {
				size = 64000
			}
			fs = append(fs, frame(size, i))
			used += (12 + size + 1525) / 1526
		}
		n, _, err := rx.q.writeBatch(&rx.m, 12, true, fs, nil, &st)
		if n != len(fs) || err != nil || rx.q.usedIdx != uint16(num) || st.RXOversize != 0 {
			t.Fatalf("%d: RX wrote %d of %d frames into %d buffers: %v", num, n, len(fs), rx.q.usedIdx, err)
		}
	}
}

// TestNoRetryWithoutProgress: an RX frame that does not fit the guest's
// buffers leaves the next frame to be judged without walking them again,
// until the guest posts more; then only the new buffers are walked.
func TestNoRetryWithoutProgress(t *testing.T) {
	t.Run("one small chain", func(t *testing.T) {
		defer hang.Guard(t, hang.Ring)()
		im := budgetImage(t, 8, true)
		im.setDesc(0, im.addr(0), 100, descFWrite, 0)
		im.post(0)
		var st Stats
		for range 100 {
			if n, _, err := im.q.writeBatch(&im.m, 12, false, frames(10, 1514), nil, &st); n != 10 || err != nil {
				t.Fatalf("writeBatch = %d, %v", n, err)
			}
		}
		if st.RXOversize != 1000 || im.q.walked != 1 {
			t.Fatalf("1000 frames dropped after %d descriptors walked (stats %+v), want 1", im.q.walked, st)
		}
		if n, _, err := im.q.writeBatch(&im.m, 12, false, frames(1, 60), nil, &st); n != 1 || err != nil || st.RXFrames != 1 {
			t.Fatalf("a frame that fits: %d, %v, stats %+v", n, err, st)
		}
	})
	t.Run("mrg, ring full of small buffers", func(t *testing.T) {
		defer hang.Guard(t, hang.Ring)()
		im := budgetImage(t, 8, true)
		for i := range 8 {
			im.setDesc(i, im.addr(100*i), 100, descFWrite, 0)
			im.post(uint16(i))
		}
		var st Stats
		for range 100 {
			if n, _, err := im.q.writeBatch(&im.m, 12, true, frames(10, 1514), nil, &st); n != 10 || err != nil {
				t.Fatalf("writeBatch = %d, %v", n, err)
			}
		}
		if st.RXOversize != 1000 || im.q.walked != 8 {
			t.Fatalf("1000 frames dropped after %d descriptors walked (stats %+v), want 8", im.q.walked, st)
		}
		if n, _, err := im.q.writeBatch(&im.m, 12, true, frames(1, 500), nil, &st); n != 1 || err != nil || im.q.usedIdx != 6 {
			t.Fatalf("a frame of 6 buffers: %d, %v, used %d", n, err, im.q.usedIdx)
		}
	})
	t.Run("mrg, too few buffers posted", func(t *testing.T) {
		defer hang.Guard(t, hang.Ring)()
		im := budgetImage(t, 8, true)
		for i := range 4 {
			im.setDesc(i, im.addr(100*i), 100, descFWrite, 0)
			im.post(uint16(i))
		}
		var st Stats
		fs := frames(1, 1514)
		for range 50 {
			if n, _, err := im.q.writeBatch(&im.m, 12, true, fs, nil, &st); n != 0 || err != nil {
				t.Fatalf("writeBatch = %d, %v", n, err)
			}
		}
		if im.q.walked != 4 {
			t.Fatalf("50 tries walked %d descriptors, want the 4 posted once", im.q.walked)
		}
		im.setDesc(4, im.addr(400), 100, descFWrite, 0)
		im.post(4)
		if n, _, err := im.q.writeBatch(&im.m, 12, true, fs, nil, &st); n != 0 || err != nil || im.q.walked != 5 {
			t.Fatalf("after one more buffer: %d, %v, walked %d, want only it walked (5)", n, err, im.q.walked)
		}
		im.setDesc(5, im.addr(1000), 2048, descFWrite, 0)
		im.post(5)
		if n, _, err := im.q.writeBatch(&im.m, 12, true, fs, nil, &st); n != 1 || err != nil || im.q.usedIdx != 6 {
			t.Fatalf("with room at last: %d, %v, used %d", n, err, im.q.usedIdx)
		}
		// The frame went into all six buffers, num_buffers says so.
		if got := im.mem[im.data+10]; got != 6 {
			t.Fatalf("num_buffers %d, want 6", got)
		}
	})
}
