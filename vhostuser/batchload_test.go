package vhostuser

import (
	"fmt"
	"testing"
)

// TestBatchLoadsAvailIdxOnce: a batch of frames into (or out of) a ring
// whose guest posted enough chains for all of them loads the avail idx
// once, not once per frame: the idx's cache line is the one the guest is
// writing its next entries into, and each load of it from another core
// can miss. An RX batch loaded it once per frame before.
func TestBatchLoadsAvailIdxOnce(t *testing.T) {
	for _, rx := range []bool{false, true} {
		t.Run(fmt.Sprintf("rx=%v", rx), func(t *testing.T) {
			im := newImage(t, 64, 1<<18)
			var st Stats
			const batch = 32
			for i := range batch {
				if rx {
					im.setDesc(i, im.addr(2048*i), 2048, descFWrite, 0)
				} else {
					im.setDesc(i, im.addr(2048*i), 12+60, 0, 0)
				}
				im.post(uint16(i))
			}
			im.q.availLoads = 0
			if rx {
				im.q.index = RXQ
				if n, _, err := im.q.writeBatch(&im.m, 12, true, frames(batch, 60), nil, &st); n != batch || err != nil {
					t.Fatalf("writeBatch = %d, %v", n, err)
				}
			} else {
				b, s := bufs(batch, 2048)
				if n, _, _, err := im.q.readBatch(&im.m, &txRules{hdrLen: 12}, b, s, nil, &st); n != batch || err != nil {
					t.Fatalf("readBatch = %d, %v", n, err)
				}
			}
			// TX: the batch's load, the one that finds the ring empty,
			// and the re-check after allowing kicks.
			want := uint64(1)
			if !rx {
				want = 3
			}
			if im.q.availLoads != want {
				t.Errorf("%d frames loaded the avail idx %d times, want %d", batch, im.q.availLoads, want)
			}
		})
	}
}

// TestFullTXBatchLoadsAvailIdxOnce: a TX batch that stops at its size
// with chains left in the ring says more from the idx it loaded, without
// loading the idx again: a second load of a line the guest keeps writing
// was a trip between cores on every full batch.
func TestFullTXBatchLoadsAvailIdxOnce(t *testing.T) {
	im := newImage(t, 128, 1<<19)
	const batch = 32
	for i := range 2*batch + 1 {
		im.setDesc(i, im.addr(2048*i), 12+60, 0, 0)
		im.post(uint16(i))
	}
	var st Stats
	for i, want := range []struct {
		n     int
		more  bool
		loads uint64
	}{
		{batch, true, 1},
		{batch, true, 1},
		// The last chain: the batch looks again once the ring is dry,
		// and again after allowing kicks.
		{1, false, 3},
	} {
		im.q.availLoads = 0
		b, s := bufs(batch, 2048)
		n, more, _, err := im.q.readBatch(&im.m, &txRules{hdrLen: 12}, b, s, nil, &st)
		if n != want.n || more != want.more || err != nil {
			t.Fatalf("batch %d: readBatch = %d, more %v, %v; want %d, more %v", i, n, more, err, want.n, want.more)
		}
		if im.q.availLoads != want.loads {
			t.Errorf("batch %d loaded the avail idx %d times, want %d", i, im.q.availLoads, want.loads)
		}
	}
}
