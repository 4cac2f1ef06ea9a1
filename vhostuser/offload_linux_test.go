package vhostuser

import (
	"bytes"
	"testing"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/hang"
	"github.com/vknetd/vknetd/internal/vhostguest"
)

// offloadBatch is a partial-checksum frame, a 64 KiB TCP superframe and a
// plain frame, with their headers.
func offloadBatch() ([][]byte, []gso.VirtioNetHdr) {
	small, csum := tcpSuperframe(200, 1448, 1)
	csum.GSOType, csum.GSOSize = gso.GSONone, 0
	big, tso := tcpSuperframe(maxTCPPayload, 1448, 2)
	return [][]byte{small, big, frame(1514, 3)}, []gso.VirtioNetHdr{csum, tso, {}}
}

// largeBuffers is a Config.Large handing out n preallocated superframe
// buffers, then nil; reset makes them all available again.
type largeBuffers struct {
	bufs [][]byte
	next int
}

func newLargeBuffers(n int) *largeBuffers {
	l := &largeBuffers{bufs: make([][]byte, n)}
	for i := range l.bufs {
		l.bufs[i] = make([]byte, gso.MaxFrameLen)
	}
	return l
}

func (l *largeBuffers) get(int) []byte {
	if l.next == len(l.bufs) {
		return nil
	}
	l.next++
	return l.bufs[l.next-1]
}

func TestOffloadsNegotiated(t *testing.T) {
	all := gso.OffloadCsum | gso.OffloadTSO4 | gso.OffloadTSO6
	for _, c := range []struct {
		name          string
		device, guest bool
		want          gso.Offloads
	}{
		{"both", true, true, all},
		{"device only", true, false, 0},
		{"guest only", false, true, 0},
		{"neither", false, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer hang.Guard(t, hang.Ring)()
			p := newPairConfig(t, vhostguest.Options{Offloads: c.guest}, Config{Offloads: c.device})
			send, receive := p.g.Offloads()
			if got := p.d.Offloads(); got != c.want || send != c.want || receive != c.want {
				t.Fatalf("device Offloads %v, guest's send %v receive %v; want %v", got, send, receive, c.want)
			}
			if p.d.tx.sendable != 0 && p.d.tx.sendable != c.want {
				t.Fatalf("the device lets the guest send %v", p.d.tx.sendable)
			}
		})
	}
	a, _ := socketpair(t)
	d, err := NewDevice(a, Config{Offloads: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if o := d.Offloads(); o != 0 {
		t.Fatalf("Offloads before SET_FEATURES: %v", o)
	}
}

// TestSuperframeBothWays: a superframe and a partial-checksum frame go
// guest -> device and device -> guest with their headers intact, over
// every buffer layout the test guest has.
func TestSuperframeBothWays(t *testing.T) {
	for _, c := range []struct {
		name string
		o    vhostguest.Options
	}{
		{"one descriptor per 16 KiB", vhostguest.Options{}},
		{"header descriptor and 4 KiB pieces", vhostguest.Options{SplitTX: true}},
		{"two regions", vhostguest.Options{TwoRegions: true}},
		{"no MRG_RXBUF, big RX buffers", vhostguest.Options{NoMergeRX: true, QueueSize: 16, RXBufSize: 12 + gso.MaxFrameLen}},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer hang.Guard(t, hang.Ring)()
			c.o.Offloads = true
			large := newLargeBuffers(2)
			p := newPairConfig(t, c.o, Config{Offloads: true, Large: large.get})
			fs, hs := offloadBatch()
			if n := p.g.Send(fs, hs); n != len(fs) {
				t.Fatalf("Send = %d", n)
			}
			got, sizes := bufs(4, 2048)
			hdrs := make([]gso.VirtioNetHdr, 4)
			n, _, err := p.d.ReadTX(got, sizes, hdrs)
			if n != len(fs) || err != nil {
				t.Fatalf("ReadTX = %d, %v; stats %+v", n, err, p.d.Stats())
			}
			sameFrames(t, "TX", fs, got, sizes)
			for i := range hs {
				if hdrs[i] != hs[i] {
					t.Fatalf("TX header %d: %+v, want %+v", i, hdrs[i], hs[i])
				}
			}
			if large.next != 1 || &got[1][0] != &large.bufs[0][0] {
				t.Fatalf("Large asked %d times; the superframe is not in its buffer", large.next)
			}

			p.g.PostRX(1 << 16)
			if n, err := p.d.WriteRX(fs, hs); n != len(fs) || err != nil {
				t.Fatalf("WriteRX = %d, %v; stats %+v", n, err, p.d.Stats())
			}
			got, sizes = bufs(4, gso.MaxFrameLen)
			if n := p.g.Receive(got, sizes, hdrs); n != len(fs) {
				t.Fatalf("Receive = %d", n)
			}
			sameFrames(t, "RX", fs, got, sizes)
			for i := range hs {
				want := hs[i]
				want.NumBuffers = hdrs[i].NumBuffers
				if hdrs[i] != want {
					t.Fatalf("RX header %d: %+v, want %+v", i, hdrs[i], want)
				}
			}
			if !c.o.NoMergeRX && hdrs[1].NumBuffers != uint16((12+len(fs[1])+2047)/2048) {
				t.Fatalf("the superframe came in %d buffers of 2 KiB", hdrs[1].NumBuffers)
			}
			if r := gso.Check(got[1][:sizes[1]], hdrs[1], 1500); r != gso.OK {
				t.Fatalf("gso.Check of the superframe the guest got: %v", r)
			}
		})
	}
}

// TestLargeNil: a superframe with no large buffer to go to waits in the
// ring: ReadTX stops before it and says more, and the next call with a
// large buffer free takes it and the frames after it. Nothing is lost.
func TestLargeNil(t *testing.T) {
	defer hang.Guard(t, hang.Ring)()
	large := newLargeBuffers(0)
	p := newPairConfig(t, vhostguest.Options{Offloads: true}, Config{Offloads: true, Large: large.get})
	fs, hs := offloadBatch()
	p.g.Send(fs, hs)
	got, sizes := bufs(4, 2048)
	hdrs := make([]gso.VirtioNetHdr, 4)
	n, more, err := p.d.ReadTX(got, sizes, hdrs)
	if n != 1 || !more || err != nil || p.d.Stats().TXOversize != 0 {
		t.Fatalf("ReadTX = %d, more %v, %v; stats %+v; want the frame before the superframe, and more", n, more, err, p.d.Stats())
	}
	sameFrames(t, "TX before the superframe", fs[:1], got, sizes)
	large.bufs = append(large.bufs, make([]byte, gso.MaxFrameLen))
	got, sizes = bufs(4, 2048)
	n, _, err = p.d.ReadTX(got, sizes, hdrs)
	if n != 2 || err != nil || p.d.Stats().TXOversize != 0 {
		t.Fatalf("second ReadTX = %d, %v; stats %+v", n, err, p.d.Stats())
	}
	sameFrames(t, "TX from the superframe on", fs[1:], got, sizes)
	if hdrs[0] != hs[1] || hdrs[1] != hs[2] {
		t.Fatalf("headers %+v", hdrs[:2])
	}
}

// TestNoLargeWithoutOffloads: without Config.Offloads, Large is never
// asked and a long frame is dropped, as before offloads existed.
func TestNoLargeWithoutOffloads(t *testing.T) {
	asked := false
	p := newPairConfig(t, vhostguest.Options{}, Config{Large: func(int) []byte { asked = true; return make([]byte, gso.MaxFrameLen) }})
	p.g.Send([][]byte{frame(9000, 1), frame(60, 2)}, nil)
	got, sizes := bufs(2, 2048)
	if n, _, err := p.d.ReadTX(got, sizes, make([]gso.VirtioNetHdr, 2)); n != 1 || err != nil || asked || p.d.Stats().TXOversize != 1 {
		t.Fatalf("ReadTX = %d, %v, Large asked %v; stats %+v", n, err, asked, p.d.Stats())
	}
}

// TestGSOWithoutNegotiating: a guest that did not negotiate offloads and
// sends a superframe or a partial checksum anyway broke the protocol: the
// frame is dropped and counted, the next one passes.
func TestGSOWithoutNegotiating(t *testing.T) {
	defer hang.Guard(t, hang.Ring)()
	for _, device := range []bool{false, true} {
		p := newPairConfig(t, vhostguest.Options{}, Config{Offloads: device, Large: newLargeBuffers(1).get})
		fs, hs := offloadBatch()
		fs[1] = fs[1][:1514] // a frame that fits, with a TSO header
		p.g.Send(fs, hs)
		got, sizes := bufs(4, 2048)
		hdrs := make([]gso.VirtioNetHdr, 4)
		n, _, err := p.d.ReadTX(got, sizes, hdrs)
		if n != 1 || err != nil || p.d.Stats().TXBadHdr != 2 {
			t.Fatalf("device offloads %v: ReadTX = %d, %v; stats %+v", device, n, err, p.d.Stats())
		}
		if !bytes.Equal(got[0][:sizes[0]], fs[2]) || hdrs[0] != (gso.VirtioNetHdr{}) {
			t.Fatalf("device offloads %v: the plain frame came out as %d bytes, header %+v", device, sizes[0], hdrs[0])
		}
	}
}

// TestRXSuperframeSmallBuffers: without MRG_RXBUF a superframe needs one
// buffer big enough; 2 KiB ones cannot hold it, so it is dropped and the
// guest still gets the rest. The guest's GUEST_TSO stands regardless.
func TestRXSuperframeSmallBuffers(t *testing.T) {
	defer hang.Guard(t, hang.Ring)()
	p := newPairConfig(t, vhostguest.Options{Offloads: true, NoMergeRX: true}, Config{Offloads: true})
	if p.d.Offloads()&gso.OffloadTSO4 == 0 {
		t.Fatalf("Offloads %v: GUEST_TSO4 without MRG_RXBUF must still count", p.d.Offloads())
	}
	fs, hs := offloadBatch()
	p.g.PostRX(256)
	if n, err := p.d.WriteRX(fs, hs); n != 3 || err != nil || p.d.Stats().RXOversize != 1 {
		t.Fatalf("WriteRX = %d, %v; stats %+v", n, err, p.d.Stats())
	}
	got, sizes := bufs(4, 2048)
	if n := p.g.Receive(got, sizes, nil); n != 2 {
		t.Fatalf("Receive = %d", n)
	}
	sameFrames(t, "RX", [][]byte{fs[0], fs[2]}, got, sizes)
}

// TestOffloadZeroAllocs: headers and large buffers cost no allocation
// per frame on either side.
func TestOffloadZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	large := newLargeBuffers(1)
	p := newPairConfig(t, vhostguest.Options{Offloads: true}, Config{Offloads: true, Large: large.get})
	var fs [][]byte
	var hs []gso.VirtioNetHdr
	for len(fs) < benchBatch {
		f, h := offloadBatch()
		fs, hs = append(fs, f[0], f[2]), append(hs, h[0], h[2])
	}
	big, bigHdr := tcpSuperframe(maxTCPPayload, 1448, 9)
	fs, hs = append(fs, big), append(hs, bigHdr)
	got, sizes := bufs(len(fs), 2048)
	small := got[len(fs)-1]
	rgot, rsizes := bufs(len(fs), gso.MaxFrameLen)
	hdrs := make([]gso.VirtioNetHdr, len(fs))
	round := func() {
		large.next = 0
		got[len(fs)-1] = small
		if n := p.g.Send(fs, hs); n != len(fs) {
			t.Fatalf("Send = %d", n)
		}
		p.d.DrainKick(TXQ)
		if n, _, err := p.d.ReadTX(got, sizes, hdrs); n != len(fs) || err != nil {
			t.Fatalf("ReadTX = %d, %v", n, err)
		}
		p.g.PostRX(256)
		if n, err := p.d.WriteRX(fs, hs); n != len(fs) || err != nil {
			t.Fatalf("WriteRX = %d, %v", n, err)
		}
		if n := p.g.Receive(rgot, rsizes, hdrs); n != len(fs) {
			t.Fatalf("Receive = %d", n)
		}
		p.g.CollectCalls()
	}
	round()
	if a := testing.AllocsPerRun(100, round); a != 0 {
		t.Fatalf("%v allocations per batch of %d frames with headers", a, len(fs))
	}
}
