package vhostuser

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/vknetd/vknetd/internal/vhostguest"
)

// SplitTX's over: a frame in one descriptor is split only when longer
// than over, copied whole up to it; a frame in pieces (a header
// descriptor, then data) is split once longer than the head, as ever.
func TestSplitTXOnlyPastOverInOneDescriptor(t *testing.T) {
	for _, pieces := range []bool{false, true} {
		t.Run(fmt.Sprintf("pieces=%v", pieces), func(t *testing.T) {
			src := newPair(t, vhostguest.Options{SplitTX: pieces})
			src.d.SplitTX(128, 4096)
			sizes := []int{60, 129, 1514, 4096, 4097, 9014}
			var frames [][]byte
			for i, size := range sizes {
				frames = append(frames, bytes.Repeat([]byte{byte(i + 1)}, size))
			}
			if n := src.g.Send(frames, nil); n != len(frames) {
				t.Fatalf("sent %d of %d", n, len(frames))
			}
			bufs, got := make([][]byte, 8), make([]int, 8)
			for i := range bufs {
				bufs[i] = make([]byte, 9100)
			}
			if n, _, err := src.d.ReadTX(bufs, got, nil); err != nil || n != len(frames) {
				t.Fatalf("ReadTX: %d frames, %v", n, err)
			}
			for i, size := range sizes {
				want := size > 4096 || pieces && size > 128
				if src.d.Split(i) != want {
					t.Errorf("frame of %d bytes: split %v, want %v", size, src.d.Split(i), want)
				}
				if !want && !bytes.Equal(bufs[i][:got[i]], frames[i]) {
					t.Errorf("frame of %d bytes, copied whole: differs", size)
				}
			}
			src.d.ReleaseTX()
		})
	}
}

// Split frames go from one guest's TX buffers into another's RX buffers
// whole, whatever the pieces on either side (a header descriptor and 4 KiB
// pieces, memory in two regions, one big buffer or merged 2 KiB ones), and
// the sender gets its buffers back only at ReleaseTX.
func TestWriteRXFromMovesSplitFrames(t *testing.T) {
	for _, tc := range []struct {
		name string
		tx   vhostguest.Options
		rx   vhostguest.Options
	}{
		{"one descriptor, merged buffers", vhostguest.Options{}, vhostguest.Options{}},
		{"pieces across regions, one big buffer", vhostguest.Options{SplitTX: true, TwoRegions: true},
			vhostguest.Options{NoMergeRX: true, RXBufSize: 9100}},
		{"pieces, merged buffers across regions", vhostguest.Options{SplitTX: true}, vhostguest.Options{TwoRegions: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, dst := newPair(t, tc.tx), newPair(t, tc.rx)
			src.d.SplitTX(128, 0)
			dst.g.PostRX(1 << 16)
			var frames [][]byte
			for i, size := range []int{60, 128, 129, 1514, 4200, 9014} {
				f := bytes.Repeat([]byte{byte(i + 1)}, size)
				copy(f, fmt.Sprintf("frame %d", i))
				frames = append(frames, f)
			}
			if n := src.g.Send(frames, nil); n != len(frames) {
				t.Fatalf("sent %d of %d", n, len(frames))
			}
			bufs, sizes := make([][]byte, 8), make([]int, 8)
			for i := range bufs {
				bufs[i] = make([]byte, 9100)
			}
			n, _, err := src.d.ReadTX(bufs, sizes, nil)
			if err != nil || n != len(frames) {
				t.Fatalf("ReadTX: %d frames, %v", n, err)
			}
			for i := range frames {
				if want := len(frames[i]) > 128; src.d.Split(i) != want {
					t.Fatalf("frame %d of %d bytes: split %v", i, len(frames[i]), !want)
				}
				if !src.d.Split(i) {
					if _, err := dst.d.WriteRX([][]byte{bufs[i][:sizes[i]]}, nil); err != nil {
						t.Fatal(err)
					}
					continue
				}
				r, err, srcErr := dst.d.WriteRXFrom(src.d, i, bufs[i][:128])
				if err != nil || srcErr != nil || r.N != 1 || r.Oversize != 0 {
					t.Fatalf("frame %d: WriteRXFrom %+v, %v, %v", i, r, err, srcErr)
				}
			}
			dst.d.FlushRX()
			if src.g.TXInFlight() != len(frames) {
				t.Fatalf("%d TX frames in flight before ReleaseTX, want all %d", src.g.TXInFlight(), len(frames))
			}
			src.d.ReleaseTX()
			if src.g.TXInFlight() != 0 {
				t.Fatalf("%d TX frames in flight after ReleaseTX", src.g.TXInFlight())
			}
			got, gotSizes := make([][]byte, 8), make([]int, 8)
			for i := range got {
				got[i] = make([]byte, 9100)
			}
			if k := dst.g.Receive(got, gotSizes, nil); k != len(frames) {
				t.Fatalf("received %d of %d", k, len(frames))
			}
			sameFrames(t, "received", frames, got, gotSizes)
			if s := dst.d.Stats(); s.DirectFrames != 4 || s.RXFrames != uint64(len(frames)) {
				t.Fatalf("stats: %d direct of %d frames, want 4 of %d", s.DirectFrames, s.RXFrames, len(frames))
			}
		})
	}
}

// A guest without room takes nothing, and is asked to kick when it posts;
// the rest is then copied to the caller's buffer intact.
func TestWriteRXFromWithoutRoom(t *testing.T) {
	src, dst := newPair(t, vhostguest.Options{}), newPair(t, vhostguest.Options{})
	src.d.SplitTX(128, 0)
	frame := bytes.Repeat([]byte{7}, 1514)
	copy(frame, "the frame")
	src.g.Send([][]byte{frame}, nil)
	bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
	if n, _, err := src.d.ReadTX(bufs, sizes, nil); n != 1 || err != nil {
		t.Fatalf("ReadTX: %d, %v", n, err)
	}
	r, err, srcErr := dst.d.WriteRXFrom(src.d, 0, bufs[0][:128])
	if r.N != 0 || err != nil || srcErr != nil {
		t.Fatalf("WriteRXFrom to a guest without buffers: %+v, %v, %v", r, err, srcErr)
	}
	dst.d.FlushRX()
	if !bytes.Equal(bufs[0][:128], frame[:128]) {
		t.Fatal("the head was not copied")
	}
	if err := src.d.CopyRest(0, bufs[0]); err != nil {
		t.Fatal(err)
	}
	src.d.ReleaseTX()
	if !bytes.Equal(bufs[0][:sizes[0]], frame) {
		t.Fatal("the frame's rest was not copied whole")
	}
	if s := src.d.Stats(); s.RestCopies != 1 {
		t.Fatalf("%d rests copied, want 1", s.RestCopies)
	}
	if dst.d.Stats().RXFrames != 0 {
		t.Fatal("a frame counted as received by a guest without buffers")
	}
}

// moveDirect sends fs from src's guest and writes them into dst's with
// WriteRXFrom, all of them split.
func moveDirect(t *testing.T, src, dst *pair, fs [][]byte) {
	t.Helper()
	b, sizes := bufs(len(fs), 2048)
	for sent := 0; sent < len(fs); {
		k := src.g.Send(fs[sent:], nil)
		n, _, err := src.d.ReadTX(b, sizes, nil)
		if err != nil || n != k {
			t.Fatalf("ReadTX = %d of %d, %v", n, k, err)
		}
		for i := range n {
			if !src.d.Split(i) {
				t.Fatalf("frame %d of %d bytes not split", i, sizes[i])
			}
			if r, err, srcErr := dst.d.WriteRXFrom(src.d, i, b[i][:128]); r.N != 1 || err != nil || srcErr != nil {
				t.Fatalf("WriteRXFrom = %+v, %v, %v", r, err, srcErr)
			}
		}
		dst.d.FlushRX()
		src.d.ReleaseTX()
		sent += n
	}
}

// A multi-queue guest gets a flow's frames written straight on the ring
// WriteRX would have chosen, by the head alone, in order.
func TestWriteRXFromKeepsFlowsOnTheirRing(t *testing.T) {
	const pairs = 4
	src, dst := newPair(t, vhostguest.Options{}), newPair(t, vhostguest.Options{QueuePairs: pairs})
	src.d.SplitTX(128, 0)
	for k := range pairs {
		dst.g.Use(k)
		dst.g.PostRX(1 << 16)
	}
	const flows, each = 16, 4
	var fs [][]byte
	for i := range each {
		for f := range flows {
			fr := udpFlowFrame(2000+f, i)
			long := make([]byte, 1000)
			copy(long, fr[:len(fr)-2])
			binary.BigEndian.PutUint16(long[len(long)-2:], uint16(i))
			fs = append(fs, long)
		}
	}
	moveDirect(t, src, dst, fs)
	b, sizes := bufs(256, 2048)
	got := 0
	for k := range pairs {
		dst.g.Use(k)
		n := dst.g.Receive(b, sizes, nil)
		next := map[int]int{}
		for i := range n {
			f := b[i][:sizes[i]]
			port := int(binary.BigEndian.Uint16(f[34:]))
			if want := int(flowHash(f) % pairs); want != k {
				t.Fatalf("flow %d on ring pair %d, WriteRX would choose %d", port, k, want)
			}
			if seq := int(binary.BigEndian.Uint16(f[len(f)-2:])); seq != next[port] {
				t.Fatalf("ring %d, flow %d: frame %d after %d", k, port, seq, next[port]-1)
			}
			next[port]++
		}
		got += n
	}
	if got != len(fs) {
		t.Fatalf("received %d frames, want %d", got, len(fs))
	}
}

// During a migration, the pages of the RX buffers a frame was written
// into straight from another guest are in the dirty log.
func TestWriteRXFromLogsWhatItWrites(t *testing.T) {
	src, dst := newPair(t, vhostguest.Options{}), newPair(t, vhostguest.Options{})
	src.d.SplitTX(128, 0)
	log := migrating(t, dst)
	dst.g.PostRX(1 << 16)
	moveDirect(t, src, dst, frames(8, 1514))
	mem := dst.g.Mem()
	desc, _, used := dst.g.RingOffsets(RXQ)
	for k := range 8 {
		off := used + 4 + 8*k
		id := binary.LittleEndian.Uint32(mem[off:])
		n := binary.LittleEndian.Uint32(mem[off+4:])
		addr := binary.LittleEndian.Uint64(mem[desc+16*int(id):])
		for a := addr &^ 4095; a < addr+uint64(n); a += 4096 {
			if !logged(log, a) {
				t.Fatalf("frame %d: page %#x written, not logged", k, a)
			}
		}
	}
	if !logged(log, vhostguest.GuestAddr(used)) {
		t.Fatal("the RX used ring's page is not logged")
	}
}
