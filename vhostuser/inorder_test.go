package vhostuser

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// VIRTIO_F_IN_ORDER is offered (features.go) because the rings use every
// chain in the order the guest posted it. These tests post chains whose
// heads are scattered over the descriptor table, of every kind a read or
// a write handles differently, and check the used ring names them in
// avail order, each once, at every step: a device that returned a
// dropped frame's chain before a held one, or a merged frame's chains
// out of turn, would break a guest that trusts the feature.

// inOrderGuest posts chains on an image with heads taken from a shuffled
// descriptor table, and remembers the order it posted them in.
type inOrderGuest struct {
	im     *image
	free   []uint16 // descriptors not in a posted chain, shuffled
	posted []uint16 // heads, in avail order
	seen   uint16   // used entries checked so far
}

func newInOrderGuest(t *testing.T, num int, seed uint64) *inOrderGuest {
	g := &inOrderGuest{im: newImage(t, num, 1<<20)}
	for i := range num {
		g.free = append(g.free, uint16(i))
	}
	rand.New(rand.NewPCG(seed, 1)).Shuffle(num, func(i, j int) { g.free[i], g.free[j] = g.free[j], g.free[i] })
	return g
}

// post makes a chain of one descriptor per size, each with its own
// buffer at data offset 4096*descriptor (filled by fill, if not nil),
// and posts it.
func (g *inOrderGuest) post(t *testing.T, flags uint16, fill func(d int, b []byte), sizes ...uint32) {
	t.Helper()
	if len(sizes) > len(g.free) {
		t.Fatalf("no %d descriptors left", len(sizes))
	}
	ds := g.free[:len(sizes)]
	g.free = g.free[len(sizes):]
	for i, d := range ds {
		f, next := flags, uint16(0)
		if i < len(ds)-1 {
			f, next = f|descFNext, ds[i+1]
		}
		off := 4096 * int(d)
		if fill != nil {
			fill(i, g.im.mem[g.im.data+off:g.im.data+off+int(sizes[i])])
		}
		g.im.setDesc(int(d), g.im.addr(off), sizes[i], f, next)
	}
	g.im.post(ds[0])
	g.posted = append(g.posted, ds[0])
}

// check says the used entries published since the last check name the
// next posted heads, in order, and gives their descriptors back to the
// guest's free list (a chain's own, walked again from its head).
func (g *inOrderGuest) check(t *testing.T, step string) {
	t.Helper()
	used := g.im.usedIdx()
	if int(used) > len(g.posted) {
		t.Fatalf("%s: used idx %d, only %d chains posted", step, used, len(g.posted))
	}
	for ; g.seen != used; g.seen++ {
		id, _ := g.im.usedEntry(g.seen)
		if want := g.posted[g.seen]; id != uint32(want) {
			t.Fatalf("%s: used entry %d names chain %d, want %d (posted order %v)", step, g.seen, id, want, g.posted)
		}
		for d := uint16(id); ; {
			g.free = append(g.free, d)
			b := g.im.mem[16*int(d):]
			if b[12]&descFNext == 0 {
				break
			}
			d = uint16(b[14]) | uint16(b[15])<<8
		}
	}
}

func TestChainsUsedInOrderTX(t *testing.T) {
	const hdrLen, split = 12, 128
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			g := newInOrderGuest(t, 64, seed)
			header := func(flags byte) func(int, []byte) {
				return func(i int, b []byte) {
					if i == 0 {
						clear(b)
						b[0] = flags
					}
				}
			}
			plain := header(0)
			// Every kind the read tells apart, in a mixed order: a frame in
			// one descriptor with its header, header and frame apart, a long
			// frame split (its chain held until the next read), one too
			// long for any buffer, a header and nothing after it, a header
			// whose flags no driver may set.
			kinds := []func(){
				func() { g.post(t, 0, plain, hdrLen+64) },
				func() { g.post(t, 0, plain, hdrLen, 1000) },
				func() { g.post(t, 0, plain, hdrLen+1514) },
				func() { g.post(t, 0, plain, hdrLen+3000) },
				func() { g.post(t, 0, plain, hdrLen) },
				func() { g.post(t, 0, header(0x80), hdrLen+64) },
				func() { g.post(t, 0, plain, hdrLen, 700, 814) },
			}
			rng := rand.New(rand.NewPCG(seed, 2))
			b, s := bufs(8, 2048)
			rules := &txRules{hdrLen: hdrLen, split: split, rests: make([]txRest, len(b)), isSplit: make([]bool, len(b))}
			var st Stats
			splits := 0
			for round := range 40 {
				for range rng.IntN(8) {
					if len(g.free) >= 3 {
						kinds[rng.IntN(len(kinds))]()
					}
				}
				for {
					n, more, _, err := g.im.q.readBatch(&g.im.m, rules, b, s, nil, &st)
					if err != nil {
						t.Fatal(err)
					}
					for i := range n {
						if rules.isSplit[i] {
							splits++
						}
					}
					g.check(t, fmt.Sprint("round ", round))
					if !more {
						break
					}
				}
			}
			// The last split chains go back at the next read.
			if _, _, _, err := g.im.q.readBatch(&g.im.m, rules, b, s, nil, &st); err != nil {
				t.Fatal(err)
			}
			g.check(t, "end")
			if int(g.seen) != len(g.posted) {
				t.Fatalf("%d of %d chains returned", g.seen, len(g.posted))
			}
			if st.TXFrames == 0 || st.TXOversize == 0 || st.TXShort == 0 || st.TXHdrFlags == 0 || splits == 0 {
				t.Fatalf("not every kind of chain was read (%d split): %+v", splits, st)
			}
		})
	}
}

func TestChainsUsedInOrderRX(t *testing.T) {
	for _, mrg := range []bool{true, false} {
		for seed := range uint64(4) {
			t.Run(fmt.Sprintf("mergeable %v seed %d", mrg, seed), func(t *testing.T) {
				hdrLen := 10
				if mrg {
					hdrLen = 12
				}
				g := newInOrderGuest(t, 64, seed)
				g.im.q.index = RXQ
				rng := rand.New(rand.NewPCG(seed, 3))
				// Buffers of one descriptor or two, small enough that a long
				// frame takes several chains (mergeable) or fits none
				// (dropped, no chain taken).
				postSome := func() {
					for range rng.IntN(6) {
						if len(g.free) < 2 {
							return
						}
						if rng.IntN(3) == 0 {
							g.post(t, descFWrite, nil, 300, 300)
						} else {
							g.post(t, descFWrite, nil, 512)
						}
					}
				}
				var frames [][]byte
				var st Stats
				for round := range 60 {
					postSome()
					for range rng.IntN(4) {
						frames = append(frames, frame([]int{60, 500, 1514}[rng.IntN(3)], round))
					}
					n, _, err := g.im.q.writeBatch(&g.im.m, hdrLen, mrg, frames, nil, &st)
					if err != nil {
						t.Fatal(err)
					}
					frames = frames[n:]
					g.check(t, fmt.Sprint("round ", round))
				}
				if st.RXFrames == 0 {
					t.Fatal("no frame written")
				}
				if !mrg && st.RXOversize == 0 {
					t.Fatalf("no frame too long for the buffers: %+v", st)
				}
			})
		}
	}
}
