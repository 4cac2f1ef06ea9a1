package ring

import "testing"

func TestPoolGetReleaseRefcount(t *testing.T) {
	p, err := NewPool(4, 64)
	if err != nil {
		t.Fatal(err)
	}
	var got []Ref
	for i := 0; i < 4; i++ {
		r, ok := p.Get()
		if !ok {
			t.Fatalf("Get %d failed with %d free", i, p.Free())
		}
		got = append(got, r)
	}
	if _, ok := p.Get(); ok {
		t.Fatal("Get succeeded on an empty pool")
	}
	// A flooded frame: two extra holders, so three releases free it.
	p.Hold(got[0])
	p.Hold(got[0])
	p.Release(got[0])
	p.Release(got[0])
	if p.Free() != 0 {
		t.Fatalf("buffer freed while still referenced: free=%d", p.Free())
	}
	p.Release(got[0])
	if p.Free() != 1 {
		t.Fatalf("free = %d after last release, want 1", p.Free())
	}
	r, ok := p.Get()
	if !ok || r != got[0] {
		t.Fatalf("Get after release = %d,%v want %d", r, ok, got[0])
	}
}

func TestPoolBuffersDoNotOverlap(t *testing.T) {
	p, _ := NewPool(3, 16)
	var refs []Ref
	for i := 0; i < 3; i++ {
		r, _ := p.Get()
		refs = append(refs, r)
		b := p.Buf(r)
		for j := range b {
			b[j] = byte(i + 1)
		}
		p.SetLen(r, 10+i)
	}
	for i, r := range refs {
		f := p.Frame(r)
		if len(f) != 10+i || cap(f) != 16 {
			t.Fatalf("frame %d: len %d cap %d", i, len(f), cap(f))
		}
		for _, c := range p.Buf(r) {
			if c != byte(i+1) {
				t.Fatalf("buffer %d overwritten by a neighbour", i)
			}
		}
		// Appending past a buffer must not spill into the next one.
		if _ = append(p.Buf(r), 0xff); p.Buf(refs[(i+1)%3])[0] == 0xff {
			t.Fatal("append on a buffer spilled into its neighbour")
		}
	}
}

func TestPoolOverReleasePanics(t *testing.T) {
	p, _ := NewPool(1, 8)
	r, _ := p.Get()
	p.Release(r)
	defer func() {
		if recover() == nil {
			t.Fatal("double release did not panic")
		}
	}()
	p.Release(r)
}

func TestNewPoolRejectsBadSizes(t *testing.T) {
	for _, c := range [][2]int{{0, 10}, {10, 0}, {-1, 5}} {
		if _, err := NewPool(c[0], c[1]); err == nil {
			t.Errorf("NewPool(%d, %d) accepted", c[0], c[1])
		}
	}
}

func TestQueueFIFOAndWrap(t *testing.T) {
	q := NewQueue(3)
	next := Ref(0)
	want := Ref(0)
	for round := 0; round < 10; round++ {
		for q.Push(next) {
			next++
		}
		if q.Len() != 3 {
			t.Fatalf("len %d after filling", q.Len())
		}
		for i := 0; i < 2; i++ {
			if q.At(0) != want {
				t.Fatalf("round %d: head %d want %d", round, q.At(0), want)
			}
			q.Drop(1)
			want++
		}
	}
	q.Drop(10)
	if q.Len() != 0 {
		t.Fatalf("len %d after over-drop", q.Len())
	}
}

func TestNoAllocations(t *testing.T) {
	p, _ := NewPool(8, 32)
	q := NewQueue(8)
	allocs := testing.AllocsPerRun(1000, func() {
		r, _ := p.Get()
		p.Hold(r)
		q.Push(r)
		q.Push(r)
		p.Release(q.At(0))
		p.Release(q.At(1))
		q.Drop(2)
	})
	if allocs != 0 {
		t.Fatalf("pool/queue cycle allocates %.1f times", allocs)
	}
}

func TestPoolLargeBuffers(t *testing.T) {
	p, err := NewPoolWithLarge(4, 64, 2, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if p.Cap() != 4 || p.CapLarge() != 2 || p.Free() != 4 || p.FreeLarge() != 2 {
		t.Fatalf("cap %d/%d free %d/%d, want 4/2 and 4/2", p.Cap(), p.CapLarge(), p.Free(), p.FreeLarge())
	}
	small, _ := p.Get()
	big, ok := p.GetLarge()
	if !ok || !p.IsLarge(big) || p.IsLarge(small) {
		t.Fatalf("GetLarge = %d,%v; IsLarge(small)=%v", big, ok, p.IsLarge(small))
	}
	if len(p.Buf(big)) != 1024 || len(p.Buf(small)) != 64 {
		t.Fatalf("buffer sizes %d and %d, want 1024 and 64", len(p.Buf(big)), len(p.Buf(small)))
	}
	p.Hdr(big).GSOSize = 1448
	p.SetLen(big, 900)
	if len(p.Frame(big)) != 900 || p.Hdr(small).GSOSize != 0 {
		t.Fatal("frame length or header not kept per buffer")
	}
	// Writing a large buffer whole touches no small one.
	for i := range p.Buf(big) {
		p.Buf(big)[i] = 0xff
	}
	if p.Buf(small)[0] != 0 {
		t.Fatal("large buffer overlaps a small one")
	}
	p.Release(big)
	if p.FreeLarge() != 2 || p.Free() != 3 {
		t.Fatalf("after release free %d/%d, want 3/2", p.Free(), p.FreeLarge())
	}
	again, _ := p.GetLarge()
	if p.Hdr(again).GSOSize != 0 || p.Len(again) != 0 {
		t.Fatal("a reused large buffer keeps its old header or length")
	}
	p.GetLarge()
	if _, ok := p.GetLarge(); ok {
		t.Fatal("GetLarge succeeded with none free")
	}
	none, _ := NewPool(2, 64)
	if _, ok := none.GetLarge(); ok || none.CapLarge() != 0 {
		t.Fatal("a pool without large buffers handed one out")
	}
	if _, err := NewPoolWithLarge(2, 64, 1, 32); err == nil {
		t.Fatal("large buffers smaller than the small ones were accepted")
	}
}
