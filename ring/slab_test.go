package ring

import (
	"runtime"
	"testing"
)

// The slabs must not be garbage-collected heap: the collector lets
// garbage grow to the size of the heap it counts as live, and a pool on
// the heap made that size the pool's (see mapSlab).
func TestSlabsAreOutsideTheHeap(t *testing.T) {
	const count, size, large, largeSize = 40000, 1536, 32, 65536 // 63 MB, half the daemon's default pool
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	p, err := NewPoolWithLarge(count, size, large, largeSize)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	runtime.ReadMemStats(&after)
	slabs := uint64(count*size + large*largeSize)
	// What stays on the heap is the per-buffer bookkeeping: lengths,
	// reference counts, headers and the free stacks, 24 bytes a buffer.
	if grew := after.HeapAlloc - before.HeapAlloc; grew > slabs/32 {
		t.Fatalf("a pool of %d MB of buffers grew the Go heap by %d MB: its slabs are on the heap", slabs>>20, grew>>20)
	}
	// The slabs are memory like any other: zero, and every byte writable.
	for _, r := range []Ref{0, count - 1} {
		b := p.Buf(r)
		if b[0] != 0 || b[size-1] != 0 {
			t.Fatalf("buffer %d is not zero", r)
		}
		b[0], b[size-1] = 1, 1
	}
	r, _ := p.GetLarge()
	b := p.Buf(r)
	b[0], b[largeSize-1] = 1, 1
}
