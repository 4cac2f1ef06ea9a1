package vhostuser

import (
	"fmt"
	"testing"
)

// ringBatch is the frames per call, as in the engine's batches.
const ringBatch = 32

// BenchmarkRingTX and BenchmarkRingRX time the ring code alone, over an
// image in plain memory: no socket, no eventfd, no test guest, so what
// they measure is the walk and the copies. Chains are what Linux posts:
// TX a header and frame in one descriptor, RX one 2 KiB buffer each (with
// MRG_RXBUF); "split" puts a header-sized piece first, as drivers without
// ANY_LAYOUT do.
func BenchmarkRingTX(b *testing.B) {
	for _, size := range []int{64, 1514} {
		for _, split := range []bool{false, true} {
			b.Run(fmt.Sprintf("%d/split=%v", size, split), func(b *testing.B) {
				im := newImage(b, 256, 1<<20)
				for i := range ringBatch {
					copy(im.mem[im.data+2048*i+12:], frame(size, i))
					if split {
						im.setDesc(2*i, im.addr(2048*i), 12, descFNext, uint16(2*i+1))
						im.setDesc(2*i+1, im.addr(2048*i+12), uint32(size), 0, 0)
					} else {
						im.setDesc(2*i, im.addr(2048*i), uint32(12+size), 0, 0)
					}
				}
				bs, sizes := bufs(ringBatch, 2048)
				rules := txRules{hdrLen: 12}
				var st Stats
				b.SetBytes(int64(size * ringBatch))
				b.ReportAllocs()
				for b.Loop() {
					for i := range ringBatch {
						im.post(uint16(2 * i))
					}
					if n, _, _, err := im.q.readBatch(&im.m, &rules, bs, sizes, nil, &st); n != ringBatch || err != nil {
						b.Fatalf("readBatch = %d, %v", n, err)
					}
				}
			})
		}
	}
}

func BenchmarkRingRX(b *testing.B) {
	for _, size := range []int{64, 1514} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			im := newImage(b, 256, 1<<20)
			im.q.index = RXQ
			for i := range ringBatch {
				im.setDesc(i, im.addr(2048*i), 2048, descFWrite, 0)
			}
			fs := frames(ringBatch, size)
			var st Stats
			b.SetBytes(int64(size * ringBatch))
			b.ReportAllocs()
			for b.Loop() {
				for i := range ringBatch {
					im.post(uint16(i))
				}
				if n, _, err := im.q.writeBatch(&im.m, 12, true, fs, nil, &st); n != ringBatch || err != nil {
					b.Fatalf("writeBatch = %d, %v", n, err)
				}
			}
		})
	}
}

// BenchmarkRingRXLogged is BenchmarkRingRX with the dirty log on, used
// ring included, as while a guest migrates: set beside BenchmarkRingRX it
// says what logging costs (issue 18: at least 0.7 of the frames/s).
// QEMU collects the log (and clears what it read) once per pass over the
// guest's memory, so most writes find their page's bit set already:
// "collect=pass" never clears it; "collect=batch" clears it after every
// batch, so every page costs its atomic OR each time (the worst case).
func BenchmarkRingRXLogged(b *testing.B) {
	for _, size := range []int{64, 1514} {
		for _, collect := range []string{"pass", "batch"} {
			b.Run(fmt.Sprintf("%d/collect=%s", size, collect), func(b *testing.B) {
				im := newImage(b, 256, 1<<20)
				im.q.index = RXQ
				log, _ := testLog(0, 64)
				im.q.log, im.q.logUsedRing, im.q.usedLogAddr = log, true, imageBase+uint64(im.used)
				for i := range ringBatch {
					im.setDesc(i, im.addr(2048*i), 2048, descFWrite, 0)
				}
				fs := frames(ringBatch, size)
				var st Stats
				b.SetBytes(int64(size * ringBatch))
				b.ReportAllocs()
				for b.Loop() {
					for i := range ringBatch {
						im.post(uint16(i))
					}
					if n, _, err := im.q.writeBatch(&im.m, 12, true, fs, nil, &st); n != ringBatch || err != nil {
						b.Fatalf("writeBatch = %d, %v", n, err)
					}
					if collect == "batch" {
						clear(log.mem[:64])
					}
				}
			})
		}
	}
}
