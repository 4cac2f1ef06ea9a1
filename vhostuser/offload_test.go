package vhostuser

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/hang"
)

// allSendable is every offload a guest can negotiate to send here.
const allSendable = gso.OffloadCsum | gso.OffloadTSO4 | gso.OffloadTSO6 | gso.OffloadECN

// postStream lays the bytes stream out at the start of the image's data
// as a TX chain cut at the given piece lengths (the last piece takes the
// rest), descriptors 0, 1..., and posts it.
func postStream(im *image, stream []byte, pieces []int) {
	copy(im.mem[im.data:], stream)
	off := 0
	for i := 0; off < len(stream); i++ {
		n := len(stream) - off
		if i < len(pieces) && pieces[i] < n {
			n = pieces[i]
		}
		var flags uint16
		if off+n < len(stream) {
			flags = descFNext
		}
		im.setDesc(i, im.addr(off), uint32(n), flags, uint16(i+1))
		off += n
	}
	im.post(0)
}

// TestTXHeaderCutAnywhere: a header comes out whole however the guest
// cuts it across descriptors, in both header sizes.
func TestTXHeaderCutAnywhere(t *testing.T) {
	want := gso.VirtioNetHdr{Flags: gso.FlagNeedsCsum, GSOType: gso.GSOTCPv4 | gso.GSOECN, HdrLen: 54,
		GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	frame := frame(1000, 3)
	for _, hdrLen := range []int{gso.HdrSize, gso.HdrSizeMrgRxbuf} {
		for _, pieces := range [][]int{{hdrLen}, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, {3, 7}, {5}, {hdrLen + 1}, {hdrLen - 1, 2}, {2, hdrLen}} {
			t.Run(fmt.Sprint(hdrLen, pieces), func(t *testing.T) {
				defer hang.Guard(t, hang.Ring)()
				im := newImage(t, 16, 16<<10)
				stream := make([]byte, hdrLen, hdrLen+len(frame))
				h := want
				h.NumBuffers = 0xbeef // the guest's noise: not handed on
				h.Encode(stream, hdrLen)
				postStream(im, append(stream, frame...), pieces)
				b, s := bufs(2, 2048)
				hdrs := make([]gso.VirtioNetHdr, 2)
				var st Stats
				n, _, _, err := im.q.readBatch(&im.m, &txRules{hdrLen: hdrLen, sendable: allSendable}, b, s, hdrs, &st)
				if n != 1 || err != nil {
					t.Fatalf("readBatch = %d, %v; stats %+v", n, err, st)
				}
				if hdrs[0] != want {
					t.Fatalf("header %+v, want %+v", hdrs[0], want)
				}
				if !bytes.Equal(b[0][:s[0]], frame) {
					t.Fatalf("frame of %d bytes differs from the %d sent", s[0], len(frame))
				}
			})
		}
	}
}

// TestTXBadHeader: a header asking for what the guest did not negotiate
// drops its frame, counted, and the ring goes on; so does one with flag
// bits or a gso_type virtio-net does not define for a driver, whatever was
// negotiated and even when it asks for nothing (issue 15, finding 8).
// Without offloads the frames that pass come with zero headers whatever
// the guest wrote in the fields nobody reads.
func TestTXBadHeader(t *testing.T) {
	tso4 := gso.VirtioNetHdr{Flags: gso.FlagNeedsCsum, GSOType: gso.GSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	csum := gso.VirtioNetHdr{Flags: gso.FlagNeedsCsum, CsumStart: 34, CsumOffset: 16}
	with := func(h gso.VirtioNetHdr, f func(*gso.VirtioNetHdr)) gso.VirtioNetHdr { f(&h); return h }
	noise := gso.VirtioNetHdr{HdrLen: 77, GSOSize: 5, CsumStart: 9}
	cases := []struct {
		name     string
		sendable gso.Offloads
		hdr      gso.VirtioNetHdr
		bad      string // "": passes; "offload", "flags", "gso-type": the counter
	}{
		{"tso4 without offloads", 0, tso4, "offload"},
		{"csum without offloads", 0, csum, "offload"},
		{"noise without offloads", 0, noise, ""},
		{"data-valid without offloads", 0, gso.VirtioNetHdr{Flags: gso.FlagDataValid}, ""},
		{"tso6 with only tso4", gso.OffloadCsum | gso.OffloadTSO4, with(tso4, func(h *gso.VirtioNetHdr) { h.GSOType = gso.GSOTCPv6 }), "offload"},
		{"ecn without ecn", gso.OffloadCsum | gso.OffloadTSO4, with(tso4, func(h *gso.VirtioNetHdr) { h.GSOType |= gso.GSOECN }), "offload"},
		{"ufo", allSendable, with(tso4, func(h *gso.VirtioNetHdr) { h.GSOType = gso.GSOUDP }), "offload"},
		{"uso, never offered", allSendable, with(tso4, func(h *gso.VirtioNetHdr) { h.GSOType = gso.GSOUDPL4 }), "offload"},
		{"unknown type", allSendable, with(tso4, func(h *gso.VirtioNetHdr) { h.GSOType = 2 }), "gso-type"},
		{"flag 0x80 alone without offloads", 0, gso.VirtioNetHdr{Flags: 0x80}, "flags"},
		{"flag 0x80 alone with offloads", allSendable, gso.VirtioNetHdr{Flags: 0x80}, "flags"},
		{"flag 0x80 on csum", allSendable, with(csum, func(h *gso.VirtioNetHdr) { h.Flags |= 0x80 }), "flags"},
		{"flag 0x80 on csum without offloads", 0, with(csum, func(h *gso.VirtioNetHdr) { h.Flags |= 0x80 }), "flags"},
		{"rsc_info without offloads", 0, gso.VirtioNetHdr{Flags: gso.FlagRSCInfo}, "flags"},
		{"gso_type 0x7f alone without offloads", 0, gso.VirtioNetHdr{GSOType: 0x7f}, "gso-type"},
		{"gso_type 6 alone with offloads", allSendable, gso.VirtioNetHdr{GSOType: 6}, "gso-type"},
		{"tso4 negotiated", allSendable, tso4, ""},
		{"csum negotiated", gso.OffloadCsum, csum, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer hang.Guard(t, hang.Ring)()
			im := newImage(t, 16, 16<<10)
			stream := make([]byte, 12+100)
			c.hdr.Encode(stream, 12)
			copy(im.mem[im.data:], stream)
			copy(im.mem[im.data+1024+12:], frame(60, 1)) // a clean frame after it
			im.setDesc(0, im.addr(0), uint32(len(stream)), 0, 0)
			im.setDesc(1, im.addr(1024), 12+60, 0, 0)
			im.post(0)
			im.post(1)
			b, s := bufs(2, 2048)
			hdrs := make([]gso.VirtioNetHdr, 2)
			var st Stats
			n, _, _, err := im.q.readBatch(&im.m, &txRules{hdrLen: 12, sendable: c.sendable}, b, s, hdrs, &st)
			want := Stats{TXFrames: 2, TXBytes: 160}
			switch c.bad {
			case "offload":
				want = Stats{TXFrames: 1, TXBytes: 60, TXBadHdr: 1}
			case "flags":
				want = Stats{TXFrames: 1, TXBytes: 60, TXHdrFlags: 1}
			case "gso-type":
				want = Stats{TXFrames: 1, TXBytes: 60, TXHdrGSOType: 1}
			}
			want.PairTXFrames[im.q.index/2] = want.TXFrames
			if n != int(want.TXFrames) || err != nil || st != want || im.q.usedIdx != 2 {
				t.Fatalf("readBatch = %d, %v; stats %+v, used %d; want %+v", n, err, st, im.q.usedIdx, want)
			}
			if c.bad != "" {
				return
			}
			want0 := c.hdr
			if c.sendable == 0 {
				want0 = gso.VirtioNetHdr{}
			}
			if hdrs[0] != want0 || hdrs[1] != (gso.VirtioNetHdr{}) {
				t.Fatalf("headers %+v, %+v; want %+v and zero", hdrs[0], hdrs[1], want0)
			}
		})
	}
}

// TestTXLarge: a frame outgrowing its buffer moves to the one Large gives,
// wherever in the chain it outgrows it; a nil answer drops the frame as
// before, and a frame too long even for the large buffer is dropped too.
func TestTXLarge(t *testing.T) {
	big, hdr := tcpSuperframe(maxTCPPayload, 1448, 7)
	stream := make([]byte, 12, 12+len(big))
	hdr.Encode(stream, 12)
	stream = append(stream, big...)
	for _, pieces := range [][]int{{len(stream)}, {12, 1000, 1048, 2000}, {4096, 4096}, {12 + 2048, 1}} {
		t.Run(fmt.Sprint(pieces), func(t *testing.T) {
			defer hang.Guard(t, hang.Ring)()
			im := newImage(t, 64, 80<<10)
			postStream(im, stream, pieces)
			b, s := bufs(2, 2048)
			small := b[0]
			large := make([]byte, gso.MaxFrameLen)
			asked := -1
			rules := txRules{hdrLen: 12, sendable: allSendable, large: func(slot int) []byte { asked = slot; return large }}
			hdrs := make([]gso.VirtioNetHdr, 2)
			var st Stats
			n, _, _, err := im.q.readBatch(&im.m, &rules, b, s, hdrs, &st)
			if n != 1 || err != nil || asked != 0 {
				t.Fatalf("readBatch = %d, %v, Large asked for slot %d; stats %+v", n, err, asked, st)
			}
			if &b[0][0] != &large[0] || &small[0] == &b[0][0] {
				t.Fatal("the large buffer did not replace bufs[0]")
			}
			if !bytes.Equal(b[0][:s[0]], big) || hdrs[0] != hdr {
				t.Fatalf("superframe of %d bytes, header %+v; want %d bytes, %+v", s[0], hdrs[0], len(big), hdr)
			}
			if r := gso.Check(b[0][:s[0]], hdrs[0], 1500); r != gso.OK {
				t.Fatalf("gso.Check: %v", r)
			}
		})
	}
	t.Run("nil", func(t *testing.T) {
		defer hang.Guard(t, hang.Ring)()
		im := newImage(t, 64, 80<<10)
		postStream(im, stream, []int{4096})
		copy(im.mem[im.data+70000+12:], frame(60, 1))
		im.setDesc(40, im.addr(70000), 12+60, 0, 0)
		im.post(40)
		b, s := bufs(2, 2048)
		rules := txRules{hdrLen: 12, sendable: allSendable, large: func(int) []byte { return nil }}
		var st Stats
		n, more, _, err := im.q.readBatch(&im.m, &rules, b, s, make([]gso.VirtioNetHdr, 2), &st)
		if n != 0 || !more || err != nil || st.TXOversize != 0 || im.q.lastAvail != 0 {
			t.Fatalf("readBatch = %d, more %v, %v, lastAvail %d; stats %+v: the superframe must wait in the ring",
				n, more, err, im.q.lastAvail, st)
		}
	})
	t.Run("longer than the large buffer", func(t *testing.T) {
		defer hang.Guard(t, hang.Ring)()
		im := newImage(t, 64, 80<<10)
		long := make([]byte, 12+gso.MaxFrameLen+1)
		postStream(im, long, []int{8192})
		b, s := bufs(2, 2048)
		large := make([]byte, gso.MaxFrameLen)
		rules := txRules{hdrLen: 12, sendable: allSendable, large: func(int) []byte { return large }}
		var st Stats
		n, _, _, err := im.q.readBatch(&im.m, &rules, b, s, make([]gso.VirtioNetHdr, 2), &st)
		if n != 0 || err != nil || st.TXOversize != 1 {
			t.Fatalf("readBatch = %d, %v; stats %+v", n, err, st)
		}
		if &b[0][0] != &large[0] {
			t.Fatal("a large buffer handed out is not in bufs[0] for the caller to find")
		}
	})
}

// TestRXHeader: WriteRX's header reaches the guest's buffer as given,
// num_buffers counting the merged buffers whichever header they hold.
func TestRXHeader(t *testing.T) {
	defer hang.Guard(t, hang.Ring)()
	want := gso.VirtioNetHdr{Flags: gso.FlagNeedsCsum, GSOType: gso.GSOTCPv6, HdrLen: 74, GSOSize: 1428, CsumStart: 54, CsumOffset: 16}
	for _, size := range []int{100, 5000} {
		im := newImage(t, 8, 64<<10)
		im.q.index = RXQ
		for i := 0; i < 4; i++ {
			im.setDesc(i, im.addr(i*2048), 2048, descFWrite, 0)
			im.post(uint16(i))
		}
		var st Stats
		n, _, err := im.q.writeBatch(&im.m, 12, true, [][]byte{frame(size, 1)}, []gso.VirtioNetHdr{want}, &st)
		if n != 1 || err != nil {
			t.Fatalf("writeBatch = %d, %v; stats %+v", n, err, st)
		}
		var got gso.VirtioNetHdr
		got.Decode(im.mem[im.data:], 12)
		w := want
		w.NumBuffers = uint16((12 + size + 2047) / 2048)
		if got != w {
			t.Fatalf("%d bytes: header %+v, want %+v", size, got, w)
		}
	}
}
