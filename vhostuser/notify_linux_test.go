package vhostuser

import (
	"encoding/binary"
	"testing"

	"github.com/vknetd/vknetd/internal/vhostguest"
)

// TestBackPressure: a guest without RX buffers takes nothing; once it
// posts some, it kicks (we asked for it when we ran dry) and gets exactly
// as many frames as it posted buffers.
func TestBackPressure(t *testing.T) {
	for _, o := range []vhostguest.Options{{}, {NoEventIdx: true}} {
		p := newPair(t, o)
		fs := frames(8, 1514)
		if n, err := p.d.WriteRX(fs, nil); n != 0 || err != nil {
			t.Fatalf("WriteRX with no buffers = %d, %v", n, err)
		}
		kicks := p.g.Kicks[RXQ]
		p.g.PostRX(3)
		if p.g.Kicks[RXQ] != kicks+1 {
			t.Fatalf("guest kicked %d times after posting, want 1", p.g.Kicks[RXQ]-kicks)
		}
		p.d.DrainKick(RXQ)
		n, err := p.d.WriteRX(fs, nil)
		if n != 3 || err != nil {
			t.Fatalf("WriteRX with 3 buffers = %d, %v", n, err)
		}
		got, sizes := bufs(8, 2048)
		if n := p.g.Receive(got, sizes, nil); n != 3 {
			t.Fatalf("guest received %d, want 3", n)
		}
		sameFrames(t, "rx", fs[:3], got, sizes)
		// Ran dry again: the next post kicks again.
		p.g.PostRX(5)
		if p.g.Kicks[RXQ] != kicks+2 {
			t.Fatalf("no kick after running dry a second time")
		}
		if n, _ := p.d.WriteRX(fs[3:], nil); n != 5 {
			t.Fatalf("WriteRX = %d, want 5", n)
		}
	}
}

// TestNotificationsPerBatch: with EVENT_IDX and without, a batch costs
// one kick and one call each way, and a busy TX ring takes no kicks.
func TestNotificationsPerBatch(t *testing.T) {
	for _, o := range []vhostguest.Options{{}, {NoEventIdx: true}} {
		p := newPair(t, o)
		calls0 := p.g.CollectCalls()
		fs := frames(32, 64)
		got, sizes := bufs(32, 2048)

		p.g.Send(fs, nil)
		if p.g.Kicks[TXQ] != 1 {
			t.Fatalf("%+v: %d kicks for one TX batch, want 1", o, p.g.Kicks[TXQ])
		}
		p.d.DrainKick(TXQ)
		if n, more, err := p.d.ReadTX(got, sizes, nil); n != 32 || more || err != nil {
			t.Fatalf("ReadTX = %d, %v, %v", n, more, err)
		}
		if c := p.g.CollectCalls(); c[TXQ]-calls0[TXQ] != 1 {
			t.Fatalf("%+v: %d TX calls for one batch, want 1", o, c[TXQ]-calls0[TXQ])
		}

		p.g.PostRX(64)
		if n, _ := p.d.WriteRX(fs, nil); n != 32 {
			t.Fatalf("WriteRX = %d", n)
		}
		if c := p.g.CollectCalls(); c[RXQ]-calls0[RXQ] != 1 {
			t.Fatalf("%+v: %d RX calls for one batch, want 1", o, c[RXQ]-calls0[RXQ])
		}
		p.g.Receive(got, sizes, nil)

		// Busy: take 8 of 32; the guest's next frames do not kick.
		p.g.Send(fs, nil)
		kicks := p.g.Kicks[TXQ]
		p.d.DrainKick(TXQ)
		if n, more, _ := p.d.ReadTX(got[:8], sizes[:8], nil); n != 8 || !more {
			t.Fatalf("partial ReadTX = %d, more %v; want 8, true", n, more)
		}
		p.g.Send(fs[:4], nil)
		if p.g.Kicks[TXQ] != kicks {
			t.Fatalf("%+v: guest kicked a busy ring", o)
		}
		total := 8
		for {
			n, more, err := p.d.ReadTX(got, sizes, nil)
			if err != nil {
				t.Fatal(err)
			}
			total += n
			if !more {
				break
			}
		}
		if total != 36 {
			t.Fatalf("read %d frames, want 36", total)
		}
		// Idle again: the next frame kicks.
		p.g.Send(fs[:1], nil)
		if p.g.Kicks[TXQ] != kicks+1 {
			t.Fatalf("%+v: idle ring took no kick", o)
		}
	}
}

// TestStopAndResume: GET_VRING_BASE stops the rings where the device
// stopped; a new connection resumes there, and frames the guest queued
// meanwhile are not lost.
func TestStopAndResume(t *testing.T) {
	p := newPair(t, vhostguest.Options{})
	fs := frames(32, 1514)
	got, sizes := bufs(32, 2048)
	for i := 0; i < 3; i++ {
		p.g.Send(fs, nil)
		p.d.ReadTX(got, sizes, nil)
	}
	p.g.Send(fs[:5], nil) // left in the ring
	var bases [2]uint16
	err := serve(p.d, func() (err error) { bases, err = p.g.Stop(); return })
	if err != nil {
		t.Fatal(err)
	}
	if bases != [2]uint16{0, 96} {
		t.Fatalf("bases %v, want [0 96]", bases)
	}
	if p.d.Ready() || p.d.KickFD(TXQ) != -1 {
		t.Fatal("device still running after GET_VRING_BASE")
	}
	if n, _, _ := p.d.ReadTX(got, sizes, nil); n != 0 {
		t.Fatal("stopped ring read")
	}
	p.d.Close()

	p.connect(t)
	n, _, err := p.d.ReadTX(got, sizes, nil)
	if n != 5 || err != nil {
		t.Fatalf("after resume ReadTX = %d, %v; want the 5 queued frames", n, err)
	}
	sameFrames(t, "resumed tx", fs[:5], got, sizes)
}

// TestDisabledRingKeepsFrames: frames the guest queues while the front-end
// has the TX ring disabled stay in the ring and are taken once enabled.
func TestDisabledRingKeepsFrames(t *testing.T) {
	p := newPair(t, vhostguest.Options{})
	enable := func(on uint32) {
		t.Helper()
		err := serve(p.d, func() error {
			st := binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, TXQ), on)
			if err := p.g.Message(vhostguest.ReqSetVringEnable, vhostguest.FlagVersion1|vhostguest.FlagNeedReply, st); err != nil {
				return err
			}
			_, err := p.g.Reply(vhostguest.ReqSetVringEnable)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	enable(0)
	fs := frames(3, 100)
	p.g.Send(fs, nil)
	got, sizes := bufs(8, 2048)
	if n, _, err := p.d.ReadTX(got, sizes, nil); n != 0 || err != nil || p.d.Ready() {
		t.Fatalf("disabled ring: ReadTX = %d, %v; ready %v", n, err, p.d.Ready())
	}
	enable(1)
	if n, _, err := p.d.ReadTX(got, sizes, nil); n != 3 || err != nil {
		t.Fatalf("re-enabled ring: ReadTX = %d, %v", n, err)
	}
	sameFrames(t, "tx", fs, got, sizes)
}

// TestBackPressureMidFrame: with MRG_RXBUF a big frame spans several
// buffers. When the guest has posted some but too few for the next frame,
// the device asks for a kick on the guest's next post (not on an entry it
// has already posted, which the guest will never cross again), and after
// that kick the frame goes in. Also when the device was already waiting
// for a kick and the guest's post is still too short.
func TestBackPressureMidFrame(t *testing.T) {
	for _, o := range []vhostguest.Options{{}, {NoEventIdx: true}} {
		p := newPair(t, o)
		fs := frames(4, 9000) // 12+9000 bytes: 5 buffers of 2048
		got, sizes := bufs(4, 9100)
		p.g.PostRX(7)
		if n, err := p.d.WriteRX(fs, nil); n != 1 || err != nil {
			t.Fatalf("%+v: WriteRX with 7 buffers = %d, %v; want 1", o, n, err)
		}
		if n := p.g.Receive(got, sizes, nil); n != 1 {
			t.Fatalf("%+v: guest received %d, want 1", o, n)
		}
		sameFrames(t, "rx", fs[:1], got, sizes)
		// 2 buffers left; 2 more still make too few, and must kick.
		kicks := p.g.Kicks[RXQ]
		p.g.PostRX(2)
		if p.g.Kicks[RXQ] != kicks+1 {
			t.Fatalf("%+v: guest kicked %d times posting buffers the device waits for, want 1", o, p.g.Kicks[RXQ]-kicks)
		}
		p.d.DrainKick(RXQ)
		if n, err := p.d.WriteRX(fs[1:], nil); n != 0 || err != nil {
			t.Fatalf("%+v: WriteRX with 4 buffers = %d, %v; want 0", o, n, err)
		}
		p.g.PostRX(3)
		if p.g.Kicks[RXQ] != kicks+2 {
			t.Fatalf("%+v: guest kicked %d times after the second post, want 2", o, p.g.Kicks[RXQ]-kicks)
		}
		p.d.DrainKick(RXQ)
		if n, err := p.d.WriteRX(fs[1:], nil); n != 1 || err != nil {
			t.Fatalf("%+v: WriteRX with 7 buffers = %d, %v; want 1", o, n, err)
		}
		if n := p.g.Receive(got, sizes, nil); n != 1 {
			t.Fatalf("%+v: guest received %d, want 1", o, n)
		}
		sameFrames(t, "rx", fs[1:2], got, sizes)
	}
}
