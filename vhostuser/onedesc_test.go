package vhostuser

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
)

// TestOneDescriptorFrames drives the short walks (readOneDesc,
// fillOneDesc) with both header sizes and the shortest frames they take
// or leave to the walker: each frame comes out of a TX descriptor whole,
// and goes into an RX buffer behind its header, with the used entry's
// length and nothing written past it.
func TestOneDescriptorFrames(t *testing.T) {
	for _, hdrLen := range []int{10, 12} {
		for _, size := range []int{1, 2, 3, 14, 64, 1514} {
			t.Run(fmt.Sprint(hdrLen, "/", size), func(t *testing.T) {
				f := frame(size, size)

				tx := newImage(t, 8, 1<<16)
				copy(tx.mem[tx.data+hdrLen:], f)
				tx.setDesc(0, tx.addr(0), uint32(hdrLen+size), 0, 0)
				tx.post(0)
				b, s := bufs(1, 2048)
				var st Stats
				if n, _, _, err := tx.q.readBatch(&tx.m, &txRules{hdrLen: hdrLen}, b, s, nil, &st); n != 1 || err != nil {
					t.Fatalf("readBatch = %d, %v", n, err)
				}
				if s[0] != size || !bytes.Equal(b[0][:size], f) {
					t.Errorf("TX frame of %d bytes: got %d bytes %x", size, s[0], b[0][:s[0]])
				}

				rx := newImage(t, 8, 1<<16)
				rx.q.index = RXQ
				for i := range 4096 {
					rx.mem[rx.data+i] = 0xee
				}
				rx.setDesc(0, rx.addr(0), 2048, descFWrite, 0)
				rx.post(0)
				if n, _, err := rx.q.writeBatch(&rx.m, hdrLen, hdrLen == 12, [][]byte{f}, nil, &st); n != 1 || err != nil {
					t.Fatalf("writeBatch = %d, %v", n, err)
				}
				want := make([]byte, hdrLen, hdrLen+size+1)
				if hdrLen == 12 {
					want[10] = 1 // num_buffers
				}
				want = append(append(want, f...), 0xee)
				if got := rx.mem[rx.data : rx.data+hdrLen+size+1]; !bytes.Equal(got, want) {
					t.Errorf("RX buffer:\n got %x\nwant %x", got, want)
				}
				if n := binary.LittleEndian.Uint32(rx.mem[rx.used+8:]); n != uint32(hdrLen+size) {
					t.Errorf("used length %d, want %d", n, hdrLen+size)
				}
				if !tx.canariesIntact() || !rx.canariesIntact() {
					t.Error("canaries overwritten")
				}
			})
		}
	}
}
