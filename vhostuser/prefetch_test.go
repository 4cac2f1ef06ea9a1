package vhostuser

import "testing"

// TestDirectFramesPrefetchOncePerBatch: frames written straight from
// another guest come one call each (WriteRXFrom), and the RX chains of a
// batch of them are prefetched once, at its first frame, not once a
// frame: prefetched only as it was written, each frame's buffer came too
// late to overlap with anything (at 1514 B, 424 against 305 ns of switch
// CPU a frame with testpmd guests).
func TestDirectFramesPrefetchOncePerBatch(t *testing.T) {
	im := newImage(t, 64, 1<<18)
	im.q.index = RXQ
	const batch = 32
	for i := range batch {
		im.setDesc(i, im.addr(2048*i), 2048, descFWrite, 0)
		im.post(uint16(i))
	}
	head := make([]byte, 128)
	var rest txRest
	rest.seg[0] = make([]byte, 1514-128)
	rest.n = 1
	var b rxBatch
	var st Stats
	for i := range batch {
		if n, err := im.q.writeRunFrom(&b, &im.m, 12, true, [][]byte{head}, &rest, &st); n != 1 || err != nil {
			t.Fatalf("frame %d: writeRunFrom = %d, %v", i, n, err)
		}
	}
	im.q.endRun(&b)
	if st.RXFrames != batch {
		t.Fatalf("%d frames written, want %d", st.RXFrames, batch)
	}
	if im.q.prefetches != 1 {
		t.Errorf("%d frames written straight prefetched their chains %d times, want once", batch, im.q.prefetches)
	}
}

// TestChainSpansWholeFramesInsideTheRegion: the lines prefetched for a
// chain are all of its frame's, header included, up to the descriptor's
// length, and never past the end of the guest's region, whatever its
// descriptors say: a hint is no licence to touch other memory's lines.
func TestChainSpansWholeFramesInsideTheRegion(t *testing.T) {
	im := newImage(t, 8, 1<<16)
	end := uint64(imageBase + len(im.mem))
	im.setDesc(0, im.addr(0), 2048, descFWrite, 0)     // a whole frame's room
	im.setDesc(1, im.addr(4096), 100, descFWrite, 0)   // shorter than the frame
	im.setDesc(2, end-64, 1<<31, descFWrite, 0)        // runs past the region
	im.setDesc(3, imageBase-4096, 8192, descFWrite, 0) // begins before it
	im.setDesc(4, im.addr(8192), 1<<20, descFWrite, 0) // a huge buffer: capped
	for i := range 5 {
		im.post(uint16(i))
	}
	frames := [][]byte{make([]byte, 1514), make([]byte, 1514), make([]byte, 1514), make([]byte, 1514), make([]byte, 9000)}
	var spans [maxPrefetch]lineSpan
	n := im.q.chainSpans(&im.m, 5, frames, 12, &spans)
	base := addrOf(im.mem)
	at := func(o uint64) uintptr { return base + uintptr(o-imageBase) }
	want := []lineSpan{
		{at(im.addr(0)), at(im.addr(0) + 1526 - 1)},
		{at(im.addr(4096)), at(im.addr(4096) + 100 - 1)},
		{at(end - 64), at(end - 1)},
		{at(im.addr(8192)), at(im.addr(8192) + maxPrefetchLen - 1)},
	}
	if n != len(want) {
		t.Fatalf("%d spans, want %d: %x", n, len(want), spans[:n])
	}
	for i, w := range want {
		if spans[i] != w {
			t.Errorf("span %d = %x, want %x", i, spans[i], w)
		}
	}
	// Issuing them is harmless too.
	prefetchRead(spans[:n])
	prefetchWrite(spans[:n])
}
