package vhostuser

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/vhostguest"
)

// ask sends a front-end message asking for an ack (REPLY_ACK, which the
// test guest negotiates) and waits for it, so the device has acted on it
// when ask returns.
func ask(g *vhostguest.Guest, req uint32, payload []byte, fds ...int) error {
	if err := g.Message(req, vhostguest.FlagVersion1|vhostguest.FlagNeedReply, payload, fds...); err != nil {
		return err
	}
	p, err := g.Reply(req)
	if err == nil && (len(p) != 8 || binary.LittleEndian.Uint64(p) != 0) {
		err = fmt.Errorf("request %d answered %x", req, p)
	}
	return err
}

const (
	protoMigration = 1<<protoFeatReplyAck | 1<<protoFeatLogShmfd | 1<<protoFeatRARP
	logBytes       = 256 // covers 8 MiB of guest-physical memory: the test guest's
)

// migrating does what QEMU does when a migration starts: the log
// (SET_LOG_BASE), LOG_ALL, then each ring's addresses again with
// VHOST_VRING_F_LOG and the used ring's guest address. It returns the log
// as the front-end sees it.
func migrating(t *testing.T, p *pair) []byte {
	t.Helper()
	fd := memfd(t, logBytes)
	defer unix.Close(fd)
	log, err := unix.Mmap(fd, 0, logBytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(log) })
	var addrs [numQueues]vringAddr
	for i := range addrs {
		addrs[i] = p.d.q[i].addr
	}
	err = serve(p.d, func() error {
		if err := ask(p.g, vhostguest.ReqSetProtocolFeatures, u64p(protoMigration)); err != nil {
			return err
		}
		if err := p.g.Message(6, vhostguest.FlagVersion1, logp(logBytes, 0), fd); err != nil {
			return err
		}
		if r, err := p.g.Reply(6); err != nil || len(r) != 8 || binary.LittleEndian.Uint64(r) != 0 {
			return fmt.Errorf("SET_LOG_BASE answered %x, %v; want a u64 0", r, err)
		}
		if err := ask(p.g, vhostguest.ReqSetFeatures, u64p(p.g.Features()|1<<featLogAll)); err != nil {
			return err
		}
		for i, a := range addrs {
			_, _, used := p.g.RingOffsets(i)
			if err := ask(p.g, vhostguest.ReqSetVringAddr, loggedAddr(uint32(i), a.desc, a.used, a.avail, vhostguest.GuestAddr(used))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return log
}

func logged(log []byte, gpa uint64) bool {
	p := gpa / 4096
	return log[p/8]&(1<<(p%8)) != 0
}

// TestDirtyLogDevice: a front-end that migrates the guest gets, in its
// log, every page the device wrote: the RX buffers filled, both used
// rings; and none it only read (TX buffers, descriptor tables, avail
// rings). Logging costs no allocation. LOG_ALL cleared, nothing more is
// logged; GET_VRING_BASE stops the rings at the entry after the last one
// used.
func TestDirtyLogDevice(t *testing.T) {
	p := newPair(t, vhostguest.Options{})
	log := migrating(t, p)
	fs := frames(benchBatch, 1514)
	got, sizes := bufs(benchBatch, 2048)
	rounds := 1
	roundTrip(t, p, fs, got, sizes)

	mem := p.g.Mem()
	_, _, rxUsed := p.g.RingOffsets(RXQ)
	want := map[uint64]bool{} // pages that must be marked
	for k := range uint16(benchBatch) {
		off := rxUsed + 4 + 8*int(k)
		id := binary.LittleEndian.Uint32(mem[off:])
		n := binary.LittleEndian.Uint32(mem[off+4:])
		desc, _, _ := p.g.RingOffsets(RXQ)
		addr := binary.LittleEndian.Uint64(mem[desc+16*int(id):])
		for a := addr &^ 4095; a < addr+uint64(n); a += 4096 {
			want[a] = true
		}
	}
	for q := range numQueues {
		_, _, used := p.g.RingOffsets(q)
		want[vhostguest.GuestAddr(used)&^4095] = true
	}
	for a := range want {
		if !logged(log, a) {
			t.Errorf("page %#x written by the device, not logged", a)
		}
	}
	for q := range numQueues {
		desc, avail, _ := p.g.RingOffsets(q)
		for _, o := range []int{desc, avail} {
			if a := vhostguest.GuestAddr(o); logged(log, a) && !want[a&^4095] {
				t.Errorf("queue %d: page %#x, only read, logged", q, a)
			}
		}
	}
	txDesc, _, _ := p.g.RingOffsets(TXQ)
	txBuf := binary.LittleEndian.Uint64(mem[txDesc+16*0:]) // a TX buffer: read only
	if txBuf != 0 && logged(log, txBuf) && !want[txBuf&^4095] {
		t.Errorf("TX buffer page %#x logged", txBuf)
	}

	if !raceEnabled {
		if a := testing.AllocsPerRun(100, func() { roundTrip(t, p, fs, got, sizes); rounds++ }); a != 0 {
			t.Fatalf("%v allocations per batch while logging", a)
		}
	}

	// Migration over (or failed): LOG_ALL cleared, nothing more logged.
	if err := serve(p.d, func() error { return ask(p.g, vhostguest.ReqSetFeatures, u64p(p.g.Features())) }); err != nil {
		t.Fatal(err)
	}
	clear(log)
	roundTrip(t, p, fs, got, sizes)
	rounds++
	if !bytes.Equal(log, make([]byte, len(log))) {
		t.Fatal("pages logged with LOG_ALL cleared")
	}

	var bases [2]uint16
	if err := serve(p.d, func() (err error) { bases, err = p.g.Stop(); return }); err != nil {
		t.Fatal(err)
	}
	if n := uint16(rounds * benchBatch); bases != [2]uint16{n, n} {
		t.Fatalf("GET_VRING_BASE: %v, want both %d (every frame used)", bases, n)
	}
	if !p.d.Stopped() || p.d.Ready() {
		t.Fatalf("after GET_VRING_BASE: Stopped %v, Ready %v", p.d.Stopped(), p.d.Ready())
	}
}

// TestSendRARP: SEND_RARP makes the next ReadTX return a RARP from the
// guest's MAC to everyone, before what the guest sent, once.
func TestSendRARP(t *testing.T) {
	p := newPair(t, vhostguest.Options{})
	mac := [6]byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	payload := append(mac[:], 0, 0)
	err := serve(p.d, func() error {
		if err := ask(p.g, vhostguest.ReqSetProtocolFeatures, u64p(protoMigration)); err != nil {
			return err
		}
		return ask(p.g, 19, payload)
	})
	if err != nil {
		t.Fatal(err)
	}
	fs := frames(2, 100)
	p.g.Send(fs, nil)
	got, sizes := bufs(8, 2048)
	hdrs := make([]gso.VirtioNetHdr, 8)
	r, err := p.d.ReadTXBatch(got, sizes, hdrs)
	if r.N != 3 || !r.Announce || err != nil {
		t.Fatalf("ReadTXBatch = %+v, %v; want the RARP and 2 frames", r, err)
	}
	want := make([]byte, 60)
	copy(want, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(want[6:], mac[:])
	copy(want[12:], []byte{0x80, 0x35, 0, 1, 8, 0, 6, 4, 0, 3})
	copy(want[22:], mac[:])
	copy(want[32:], mac[:])
	if !bytes.Equal(got[0][:sizes[0]], want) || hdrs[0] != (gso.VirtioNetHdr{}) {
		t.Fatalf("first frame % x, want the RARP % x", got[0][:sizes[0]], want)
	}
	sameFrames(t, "after the RARP", fs, got[1:], sizes[1:])
	if st := p.d.Stats(); st.Announces != 1 || st.TXFrames != 2 {
		t.Fatalf("stats %+v: want 1 announcement, 2 frames", st)
	}
	p.g.Send(fs, nil)
	if r, _ := p.d.ReadTXBatch(got, sizes, nil); r.N != 2 || r.Announce {
		t.Fatalf("second ReadTXBatch = %+v, want the guest's 2 frames alone", r)
	}
	if p.d.Stopped() {
		t.Fatal("Stopped before any GET_VRING_BASE")
	}
}

// TestDirtyLogMemoryBudget: the log's mapping is charged with the memory
// table; a log over the budget is refused, and closing releases both.
func TestDirtyLogMemoryBudget(t *testing.T) {
	var l memoryLedger
	l.cap = 1 << 40
	p := newPairConfig(t, vhostguest.Options{}, Config{Memory: l.set})
	table := l.held
	migrating(t, p)
	if l.held != table+4096 {
		t.Fatalf("held %d, want the table's %d and the log's page", l.held, table)
	}
	l.cap = l.held
	fd := memfd(t, 64<<10)
	defer unix.Close(fd)
	err := serve(p.d, func() error {
		if err := p.g.Message(6, vhostguest.FlagVersion1, logp(64<<10, 0), fd); err != nil {
			return err
		}
		_, err := p.g.Reply(6)
		return err
	})
	if !isViolation(err) || !strings.Contains(err.Error(), "SET_LOG_BASE (6): log refused: over the test's cap") {
		t.Fatalf("err = %v, want the log refused", err)
	}
	p.d.Close()
	if l.held != 0 {
		t.Fatalf("held %d after Close", l.held)
	}
}

// TestRARPBeforeSuperframe: with the announcement in slot 0, a
// superframe after it is given the large buffer Config.Large hands out
// for its own slot, and the announcement stays where it was.
func TestRARPBeforeSuperframe(t *testing.T) {
	var asked []int
	large := func(slot int) []byte { asked = append(asked, slot); return make([]byte, gso.MaxFrameLen) }
	p := newPairConfig(t, vhostguest.Options{Offloads: true}, Config{Offloads: true, Large: large})
	if err := serve(p.d, func() error {
		if err := ask(p.g, vhostguest.ReqSetProtocolFeatures, u64p(protoMigration)); err != nil {
			return err
		}
		return ask(p.g, 19, u64p(0x5634_1200_5452))
	}); err != nil {
		t.Fatal(err)
	}
	fs, hs := offloadBatch()
	p.g.Send(fs[1:2], hs[1:2]) // the superframe
	got, sizes := bufs(4, 2048)
	hdrs := make([]gso.VirtioNetHdr, 4)
	n, _, err := p.d.ReadTX(got, sizes, hdrs)
	if n != 2 || err != nil || len(asked) != 1 || asked[0] != 1 {
		t.Fatalf("ReadTX = %d, %v, Large asked for slots %v; want the RARP and the superframe, slot 1", n, err, asked)
	}
	if sizes[0] != rarpLen || got[0][12] != 0x80 || got[0][13] != 0x35 {
		t.Fatalf("slot 0: % x, want the RARP", got[0][:sizes[0]])
	}
	sameFrames(t, "superframe after the RARP", fs[1:2], got[1:], sizes[1:])
	if hdrs[1] != hs[1] {
		t.Fatalf("header %+v, want %+v", hdrs[1], hs[1])
	}
}
