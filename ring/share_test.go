package ring

import (
	"sync"
	"testing"
)

// Views of a shared pool pass buffers between goroutines, as loops pass
// frames: one view takes and fills, another holds it twice (a flood to
// two of its ports) and releases it, and every buffer comes back, once.
func TestSharedPoolAcrossGoroutines(t *testing.T) {
	p, err := NewPoolWithLarge(1024, 64, 4, 256)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	views := p.Share(2)
	producer, consumer := views[0], views[1]
	handoff := make(chan Ref, 256)
	const frames = 100000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for r := range handoff {
			if got := consumer.Frame(r); len(got) != 8 || got[0] != byte(r) {
				t.Errorf("buffer %d holds % x", r, got)
			}
			consumer.Hold(r)
			consumer.Release(r)
			consumer.Release(r)
		}
	}()
	for i := 0; i < frames; i++ {
		r, ok := producer.Get()
		if !ok {
			i-- // the consumer has them; it gives them back
			continue
		}
		b := producer.Buf(r)
		b[0] = byte(r)
		producer.SetLen(r, 8)
		producer.Hold(r) // the consumer's reference
		producer.Cross(r)
		handoff <- r
		producer.Release(r)
	}
	close(handoff)
	wg.Wait()
	if got := p.Free() + producer.Cached() + consumer.Cached(); got != 1024 {
		t.Fatalf("%d buffers free after every frame was released, want 1024", got)
	}
	r, ok := producer.GetLarge()
	if !ok || !p.IsLarge(r) || p.FreeLarge() != 3 {
		t.Fatalf("large buffer %d, %v; %d left free", r, ok, p.FreeLarge())
	}
	consumer.Release(r)
	if p.FreeLarge() != 4 {
		t.Fatalf("%d large buffers free after the release, want 4", p.FreeLarge())
	}
}

// One view is the pool itself: one owner pays for no atomics or depot.
func TestShareOneIsThePool(t *testing.T) {
	p, _ := NewPool(4, 64)
	defer p.Close()
	if v := p.Share(1); len(v) != 1 || v[0] != p || p.depot != nil {
		t.Fatal("Share(1) did not return the pool itself")
	}
}

func TestSharedPoolGetReleaseAllocatesNothing(t *testing.T) {
	p, _ := NewPool(4096, 64)
	defer p.Close()
	v := p.Share(2)[0]
	refs := make([]Ref, 300)
	allocs := testing.AllocsPerRun(100, func() {
		for i := range refs {
			refs[i], _ = v.Get()
		}
		for _, r := range refs {
			v.Release(r)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per 300 buffers", allocs)
	}
}

// A view counts a buffer's references plainly until it passes it to
// another (Cross), atomically from then until the buffer is free, and
// plainly again once it is taken anew: the buffers that never leave a
// loop, most of them, cost no atomic instruction.
func TestSharedPoolCountsAtomicallyOnlyCrossedBuffers(t *testing.T) {
	p, _ := NewPool(1024, 64)
	defer p.Close()
	v := p.Share(2)[0]
	r, _ := v.Get()
	if v.atomicRefs(r) {
		t.Fatal("a buffer just taken is counted atomically")
	}
	v.Hold(r)
	v.Cross(r)
	if !v.atomicRefs(r) {
		t.Fatal("a crossed buffer is counted plainly")
	}
	v.Release(r)
	v.Release(r)
	again, _ := v.Get()
	if again != r {
		t.Fatalf("got buffer %d, want %d again from the view's cache", again, r)
	}
	if v.atomicRefs(again) {
		t.Fatal("a crossed buffer taken anew is still counted atomically")
	}
	v.Release(again)
	// One owner never crosses: Cross on an unshared pool changes nothing.
	u, _ := NewPool(4, 64)
	defer u.Close()
	ur, _ := u.Get()
	u.Cross(ur)
	if u.atomicRefs(ur) {
		t.Fatal("an unshared pool counts atomically")
	}
}
