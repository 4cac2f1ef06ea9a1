package vhostuser

import (
	"fmt"
	"testing"

	"github.com/vknetd/vknetd/internal/vhostguest"
)

const benchBatch = 32

// roundTrip moves one batch guest -> device (TX) and device -> guest (RX).
func roundTrip(tb testing.TB, p *pair, fs, got [][]byte, sizes []int) {
	p.g.Send(fs, nil)
	p.d.DrainKick(TXQ)
	if n, _, err := p.d.ReadTX(got, sizes, nil); n != len(fs) || err != nil {
		tb.Fatalf("ReadTX = %d, %v", n, err)
	}
	p.g.PostRX(len(fs) * ((len(fs[0]) + 12 + 2047) / 2048)) // 2 KiB buffers
	if n, err := p.d.WriteRX(fs, nil); n != len(fs) || err != nil {
		tb.Fatalf("WriteRX = %d, %v", n, err)
	}
	if n := p.g.Receive(got, sizes, nil); n != len(fs) {
		tb.Fatalf("Receive = %d", n)
	}
	p.g.CollectCalls()
}

// TestZeroAllocs: the data path allocates nothing per frame, on either
// side (the test guest is held to the same rule so it cannot hide ours).
func TestZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	for _, size := range []int{64, 1514, 9000} {
		p := newPair(t, vhostguest.Options{TwoRegions: true})
		fs := frames(benchBatch, size)
		got, sizes := bufs(benchBatch, 9216)
		roundTrip(t, p, fs, got, sizes)
		if a := testing.AllocsPerRun(200, func() { roundTrip(t, p, fs, got, sizes) }); a != 0 {
			t.Fatalf("%d B: %v allocations per batch of %d", size, a, benchBatch)
		}
	}
}

// BenchmarkTX: the guest sends a batch of 32, the device reads it. The
// figure includes the test guest's half (writing descriptors, one kick),
// as a real guest's would be on another core.
func BenchmarkTX(b *testing.B) {
	for _, size := range []int{64, 1514} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			p := newPair(b, vhostguest.Options{})
			fs := frames(benchBatch, size)
			got, sizes := bufs(benchBatch, 2048)
			b.ReportAllocs()
			b.SetBytes(int64(size * benchBatch))
			for b.Loop() {
				p.g.Send(fs, nil)
				p.d.DrainKick(TXQ)
				if n, _, err := p.d.ReadTX(got, sizes, nil); n != benchBatch || err != nil {
					b.Fatalf("ReadTX = %d, %v", n, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/frame")
		})
	}
}

// BenchmarkRX: the guest posts 32 buffers, the device writes a batch of
// 32 frames into them, the guest collects them.
func BenchmarkRX(b *testing.B) {
	for _, size := range []int{64, 1514} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			p := newPair(b, vhostguest.Options{})
			fs := frames(benchBatch, size)
			got, sizes := bufs(benchBatch, 2048)
			b.ReportAllocs()
			b.SetBytes(int64(size * benchBatch))
			for b.Loop() {
				p.g.PostRX(benchBatch)
				p.d.DrainKick(RXQ)
				if n, err := p.d.WriteRX(fs, nil); n != benchBatch || err != nil {
					b.Fatalf("WriteRX = %d, %v", n, err)
				}
				p.g.Receive(got, sizes, nil)
				p.g.CollectCalls()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/frame")
		})
	}
}

// BenchmarkGuestToGuest: a batch of 32 long frames (short ones are never
// split) from one guest's TX ring
// into another's RX ring, through the caller's buffers (pool: ReadTX then
// WriteRX, two copies) or with one copy (direct: SplitTX, the head into
// the caller's buffer, WriteRXFrom, ReleaseTX). The test guests' halves
// (Send's and Receive's copies) are in both.
func BenchmarkGuestToGuest(b *testing.B) {
	for _, mode := range []string{"pool", "direct"} {
		for _, size := range []int{1514, 9000} {
			b.Run(fmt.Sprintf("%s/%d", mode, size), func(b *testing.B) {
				src, dst := newPair(b, vhostguest.Options{}), newPair(b, vhostguest.Options{})
				if mode == "direct" {
					src.d.SplitTX(128, 0)
				}
				fs := frames(benchBatch, size)
				got, sizes := bufs(benchBatch, 9216)
				out := make([][]byte, benchBatch)
				b.ReportAllocs()
				b.SetBytes(int64(size * benchBatch))
				for b.Loop() {
					src.g.Send(fs, nil)
					dst.g.PostRX(benchBatch * ((size + 12 + 2047) / 2048)) // 2 KiB buffers
					n, _, err := src.d.ReadTX(got, sizes, nil)
					if n != benchBatch || err != nil {
						b.Fatalf("ReadTX = %d, %v", n, err)
					}
					whole := 0 // frames not split, gathered in out for one WriteRX
					for i := range n {
						if src.d.Split(i) {
							if r, err, srcErr := dst.d.WriteRXFrom(src.d, i, got[i][:128]); r.N != 1 || err != nil || srcErr != nil {
								b.Fatalf("WriteRXFrom = %+v, %v, %v", r, err, srcErr)
							}
							continue
						}
						out[whole] = got[i][:sizes[i]]
						whole++
					}
					if k, err := dst.d.WriteRX(out[:whole], nil); k != whole || err != nil {
						b.Fatalf("WriteRX = %d, %v", k, err)
					}
					dst.d.FlushRX()
					src.d.ReleaseTX()
					dst.g.Receive(got, sizes, nil)
					src.g.CollectCalls()
					dst.g.CollectCalls()
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/frame")
			})
		}
	}
}
