package vhostuser

import (
	"encoding/binary"
	"testing"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/hang"
)

// FuzzVirtqueue drives TX and RX processing over guest memory the fuzzer
// writes: descriptor table, both ring indices, entries and flags, and the
// region layout. Whatever it writes, ring code must not panic, must not
// touch a byte outside the memory (canaries), must return only frames
// that fit their buffers, must report lies as violations, and must walk
// no more descriptors per call than the queue size allows (issue 15).
func FuzzVirtqueue(f *testing.F) {
	// Seeds: a good TX frame, a chain, a loop, an RX buffer set.
	seed := func(flags byte, descs [][4]uint64, heads []uint16, avail uint16) []byte {
		b := []byte{3, flags, 0} // num = 1<<3, mode, region split
		for _, d := range descs {
			b = binary.LittleEndian.AppendUint64(b, d[0])
			b = binary.LittleEndian.AppendUint32(b, uint32(d[1]))
			b = binary.LittleEndian.AppendUint16(b, uint16(d[2]))
			b = binary.LittleEndian.AppendUint16(b, uint16(d[3]))
		}
		for len(b) < 3+16*8 {
			b = append(b, 0)
		}
		b = binary.LittleEndian.AppendUint16(b, 0)
		b = binary.LittleEndian.AppendUint16(b, avail)
		for _, h := range heads {
			b = binary.LittleEndian.AppendUint16(b, h)
		}
		return b
	}
	data := uint64(imageBase + 1024)
	f.Add(seed(0, [][4]uint64{{data, 12 + 64, 0, 0}}, []uint16{0}, 1))
	f.Add(seed(0, [][4]uint64{{data, 12, descFNext, 1}, {data + 100, 1500, 0, 0}}, []uint16{0}, 1))
	f.Add(seed(0, [][4]uint64{{data, 12, descFNext, 1}, {data, 12, descFNext, 0}}, []uint16{0}, 1))
	f.Add(seed(1, [][4]uint64{{data, 2048, descFWrite, 0}, {data + 2048, 2048, descFWrite, 0}}, []uint16{0, 1}, 2))
	f.Add(seed(3, [][4]uint64{{data, 1000, descFWrite, 0}, {data + 2040, 1000, descFWrite, 0}}, []uint16{0, 1}, 2))
	f.Add(seed(0, [][4]uint64{{1<<64 - 8, 64, 0, 0}}, []uint16{0}, 1))
	f.Add(seed(0, nil, []uint16{7}, 9))
	// Headers: a header cut across three descriptors, with offloads
	// negotiated (mode 16) and without; a long frame and a Large buffer
	// (mode 32). The fuzzer writes the header bytes themselves.
	f.Add(seed(16, [][4]uint64{{data, 3, descFNext, 1}, {data + 3, 7, descFNext, 2}, {data + 10, 2 + 1500, 0, 0}}, []uint16{0}, 1))
	f.Add(seed(0, [][4]uint64{{data, 3, descFNext, 1}, {data + 3, 7, descFNext, 2}, {data + 10, 2 + 1500, 0, 0}}, []uint16{0}, 1))
	f.Add(seed(48, [][4]uint64{{data, 12 + 8000, 0, 0}}, []uint16{0}, 1))
	// Split reads: a frame in one descriptor, and one in six pieces (more
	// than a rest records), the head cut inside the second.
	f.Add(seed(8, [][4]uint64{{data, 12 + 1500, 0, 0}}, []uint16{0}, 1))
	f.Add(seed(8, [][4]uint64{{data, 12 + 100, descFNext, 1}, {data + 200, 100, descFNext, 2}, {data + 400, 100, descFNext, 3},
		{data + 600, 100, descFNext, 4}, {data + 800, 100, descFNext, 5}, {data + 1000, 100, 0, 0}}, []uint16{0}, 1))
	// Rings across the 16-bit wrap (mode 64: they start at 65534): four
	// TX frames and four RX buffers posted in slots 6, 7, 0 and 1 take
	// the avail idx to 2.
	four := [][4]uint64{{data, 12 + 64, 0, 0}, {data + 128, 12 + 64, 0, 0}, {data + 256, 12 + 64, 0, 0}, {data + 384, 12 + 64, 0, 0}}
	f.Add(seed(64, four, []uint16{2, 3, 0, 0, 0, 0, 0, 1}, 2))
	fourRX := [][4]uint64{{data, 2048, descFWrite, 0}, {data + 2048, 2048, descFWrite, 0}, {data + 4096, 1000, descFWrite, 0}, {data + 6144, 2048, descFWrite, 0}}
	f.Add(seed(64|1, fourRX, []uint16{2, 3, 0, 0, 0, 0, 0, 1}, 2))
	f.Add(seed(64|1|2, fourRX, []uint16{2, 3, 0, 0, 0, 0, 0, 1}, 1))
	// Two small RX buffers posted in slots 6 and 7, and two more left in
	// slots 0 and 1 from the last lap: a frame that needs four waits.
	small := [][4]uint64{{data, 500, descFWrite, 0}, {data + 512, 500, descFWrite, 0}, {data + 1024, 500, descFWrite, 0}, {data + 1536, 500, descFWrite, 0}}
	f.Add(seed(64|1, small, []uint16{2, 3, 0, 0, 0, 0, 0, 1}, 0))
	// Logged: RX buffers and TX frames with the dirty log on.
	f.Add(seed(128|64|1, fourRX, []uint16{2, 3, 0, 0, 0, 0, 0, 1}, 2))
	f.Add(seed(128|64, four, []uint16{2, 3, 0, 0, 0, 0, 0, 1}, 2))

	f.Fuzz(func(t *testing.T, in []byte) {
		defer hang.Guard(t, hang.Ring)()
		if len(in) < 3 {
			return
		}
		num := 1 << (in[0] % 9) // 1..256
		mode, split := in[1], in[2]
		const size = 16 << 10
		im := newImage(t, num, size)
		copy(im.mem, in[3:])
		// Optionally split the memory into two regions, adjacent or with
		// a hole, so ranges cross region boundaries.
		if cut := int(split) * 64; cut > 0 && cut < size {
			im.m = memory{}
			hole := uint64(mode>>4) * 4096
			im.m.add(Region{GuestAddr: imageBase, Size: uint64(cut), UserAddr: 0x7000000}, im.mem[:cut])
			im.m.add(Region{GuestAddr: imageBase + uint64(cut) + hole, Size: uint64(size - cut), UserAddr: 0x8000000}, im.mem[cut:])
		}
		im.q.eventIdx = mode&2 != 0
		if mode&64 != 0 {
			im.q.reset(num, 0xfffe, im.q.eventIdx) // two entries short of the wrap
		}
		// Mode 128 logs every write (a migration under way).
		var log *dirtyLog
		if mode&128 != 0 {
			log, _ = testLog(int(split%8), 64)
			im.q.log, im.q.logUsedRing, im.q.usedLogAddr = log, true, imageBase+uint64(im.used)
		}
		hdrLen := 12
		if mode&4 != 0 {
			hdrLen = 10
		}
		rules := txRules{hdrLen: hdrLen}
		if mode&16 != 0 {
			rules.sendable = gso.OffloadCsum | gso.OffloadTSO4 | gso.OffloadTSO6 | gso.OffloadECN
		}
		if mode&32 != 0 {
			rules.large = func(int) []byte { return make([]byte, gso.MaxFrameLen) }
		}
		// Mode 8 on TX reads split (direct.go): the first 128 bytes of a
		// frame copied, the rest recorded and copied after the read.
		if mode&8 != 0 && mode&1 == 0 {
			rules.split, rules.rests, rules.isSplit = 128, make([]txRest, 4), make([]bool, 4)
		}
		var st Stats
		// A call that went well took no entry past the avail idx: none the
		// guest did not post (the idx is counted modulo 2^16). An RX buffer
		// may cover the avail ring itself: when the call's own writes
		// changed the idx, the guest asked for that, and there is no idx to
		// hold the call to.
		tookOnlyPosted := func(before uint16) {
			idx := binary.LittleEndian.Uint16(im.mem[im.avail+2:])
			if idx != before {
				return
			}
			if int(idx-im.q.lastAvail) > num {
				t.Fatalf("took entries up to %d, past the avail idx %d", im.q.lastAvail, idx)
			}
		}
		for round := 0; round < 3; round++ {
			idx0 := binary.LittleEndian.Uint16(im.mem[im.avail+2:])
			if mode&1 == 0 {
				b, s := bufs(4, 1600)
				h := make([]gso.VirtioNetHdr, len(b))
				before := im.q.walked
				n, _, _, err := im.q.readBatch(&im.m, &rules, b, s, h, &st)
				if w := im.q.walked - before; w > uint64(num) {
					t.Fatalf("one TX batch walked %d descriptors, queue size %d", w, num)
				}
				for i := 0; i < n; i++ {
					if s[i] <= 0 || s[i] > len(b[i]) {
						t.Fatalf("frame %d of %d bytes in a %d-byte buffer", i, s[i], len(b[i]))
					}
					if rules.split > 0 && rules.isSplit[i] {
						if r := &rules.rests[i]; s[i] <= rules.split || rules.split+r.len() != s[i] {
							t.Fatalf("split frame %d of %d bytes: a rest of %d after %d", i, s[i], r.len(), rules.split)
						}
						rules.rests[i].spill(b[i], uint64(rules.split))
					}
					if !rules.sendable.Takes(h[i]) {
						t.Fatalf("frame %d came with header %+v, which the guest may not send", i, h[i])
					}
				}
				im.q.releaseHeld()
				if err != nil {
					break
				}
				tookOnlyPosted(idx0)
			} else {
				hs := []gso.VirtioNetHdr{{}, {Flags: gso.FlagNeedsCsum, CsumStart: 34, CsumOffset: 16}, {GSOType: gso.GSOTCPv4, GSOSize: 1448, HdrLen: 54}}
				before := im.q.walked
				_, _, err := im.q.writeBatch(&im.m, hdrLen, mode&8 == 0, frames(3, 1514), hs, &st)
				// Per frame: a walk that fails, one after a publish, one
				// that writes, and the measuring of new chains.
				if w := im.q.walked - before; w > uint64(4*3*num) {
					t.Fatalf("one RX batch of 3 frames walked %d descriptors, queue size %d", w, num)
				}
				if err != nil {
					break
				}
				tookOnlyPosted(idx0)
			}
			// The guest moves on between rounds.
			idx := binary.LittleEndian.Uint16(im.mem[im.avail+2:])
			binary.LittleEndian.PutUint16(im.mem[im.avail+2:], idx+uint16(in[len(in)-1]%4))
		}
		if !im.canariesIntact() {
			t.Fatal("wrote outside guest memory")
		}
		if log != nil {
			dirtyPages(t, log) // nothing written outside the bitmap
		}
	})
}
