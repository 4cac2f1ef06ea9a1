package vhostuser

import (
	"encoding/binary"
	"testing"
)

// image is a split virtqueue laid out in a plain byte slice standing for
// guest memory, with canary bytes around it, so ring code can be driven
// (and fuzzed) without a front-end. Guest address g is mem[g-imageBase].
type image struct {
	all   []byte // canary | memory | canary
	mem   []byte
	m     memory
	q     virtq
	num   int
	avail int // offsets in mem
	used  int
	data  int
}

const (
	imageBase   = 0x10000
	canaryBytes = 64
	canary      = 0xa5
)

func newImage(t testing.TB, num, size int) *image {
	im := &image{num: num}
	im.all = make([]byte, size+2*canaryBytes)
	for i := range im.all {
		im.all[i] = canary
	}
	im.mem = im.all[canaryBytes : canaryBytes+size]
	clear(im.mem)
	im.avail = 16 * num
	im.used = (im.avail + 6 + 2*num + 3) &^ 3
	im.data = (im.used + 6 + 8*num + 15) &^ 15
	if im.data > size {
		t.Fatalf("image of %d bytes too small for %d entries", size, num)
	}
	im.m.add(Region{GuestAddr: imageBase, Size: uint64(size), UserAddr: 0x7000000}, im.mem)
	im.q.index = TXQ
	im.q.reset(num, 0, true)
	// Each view ends at its ring's end, capacity included, so a read past
	// a ring panics here rather than reading the next one unseen.
	if err := im.q.setRings(im.mem[:16*num:16*num], im.mem[im.avail:im.avail+6+2*num:im.avail+6+2*num],
		im.mem[im.used:im.used+6+8*num:im.used+6+8*num]); err != nil {
		t.Fatal(err)
	}
	return im
}

func (im *image) setDesc(i int, addr uint64, n uint32, flags, next uint16) {
	b := im.mem[16*i:]
	binary.LittleEndian.PutUint64(b, addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
}

// post puts head in the avail ring's next slot and publishes it.
func (im *image) post(head uint16) {
	idx := binary.LittleEndian.Uint16(im.mem[im.avail+2:])
	binary.LittleEndian.PutUint16(im.mem[im.avail+4+2*int(idx&uint16(im.num-1)):], head)
	binary.LittleEndian.PutUint16(im.mem[im.avail+2:], idx+1)
}

func (im *image) setAvailIdx(v uint16) { binary.LittleEndian.PutUint16(im.mem[im.avail+2:], v) }

// addr is the guest address of data offset o.
func (im *image) addr(o int) uint64 { return imageBase + uint64(im.data+o) }

// canariesIntact says nothing wrote outside the memory.
func (im *image) canariesIntact() bool {
	for i := 0; i < canaryBytes; i++ {
		if im.all[i] != canary || im.all[len(im.all)-1-i] != canary {
			return false
		}
	}
	return true
}
