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
