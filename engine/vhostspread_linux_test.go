package engine

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/handover"
	"github.com/vknetd/vknetd/internal/testbed"
	"github.com/vknetd/vknetd/internal/vhostguest"
)

// spreadWorkers is which loop serves each of port id's queue pairs in
// use ("0,1,0,1"), "" while its own loop serves them all (or it is gone).
// Any goroutine may ask.
func spreadWorkers(e *Engine, id uint32) string {
	p := e.ports.get(id)
	if p == nil {
		return ""
	}
	var w string
	p.loop.do(func() {
		if p.spread != nil {
			w = p.spread.workers()
		}
	})
	return w
}

// handleFrames sums what the queue handles of every loop moved: frames
// read from their guests' TX rings and written to their RX rings.
func handleFrames(t *testing.T, e *Engine) (rx, tx uint64) {
	t.Helper()
	for _, l := range e.loops {
		if err := l.do(func() {
			for _, h := range l.handles {
				rx += h.cnt.rxFrames
				tx += h.cnt.txFrames
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	return rx, tx
}

// mqSetup is a switch of 2 loops with a single-queue guest a (mac(1))
// and a guest m of 4 queue pairs (mac(2)), each heard once, and m's port.
type mqSetup struct {
	e        *Engine
	path     string
	a, m     *vhostguest.Guest
	mID      uint32
	ipA, ipM netip.Addr
	bufs     [][]byte
	sizes    []int
	sentM    uint64 // frames m sent (its port's RxFrames)
	sentToM  uint64 // frames sent to m (its port's TxFrames, all delivered)
}

const mqPairs = 4

func newMQSetup(t *testing.T, tweak func(*Config)) *mqSetup {
	return newMQSetupOrdered(t, tweak, false)
}

// newMQSetupOrdered is newMQSetup with m connected before a when mFirst:
// each lands on the loop with the fewest ports, so m's port is on the
// first loop then, and on the second otherwise.
func newMQSetupOrdered(t *testing.T, tweak func(*Config), mFirst bool) *mqSetup {
	t.Helper()
	e, path := vhostSwitch(t, false, func(c *Config) {
		c.Workers = 2
		if tweak != nil {
			tweak(c)
		}
	})
	s := &mqSetup{e: e, path: path, ipA: netip.AddrFrom4([4]byte{198, 18, 1, 1}), ipM: netip.AddrFrom4([4]byte{198, 18, 1, 2})}
	if mFirst {
		s.m = startGuest(t, path, vhostguest.Options{QueuePairs: mqPairs})
		waitFor(t, func() bool { st, _ := e.Stats(); return st.Clients == 1 })
		s.a = startGuest(t, path, vhostguest.Options{})
	} else {
		s.a = startGuest(t, path, vhostguest.Options{})
		waitFor(t, func() bool { st, _ := e.Stats(); return st.Clients == 1 })
		s.m = startGuest(t, path, vhostguest.Options{QueuePairs: mqPairs})
	}
	for k := 1; k < mqPairs; k++ {
		s.m.Use(k)
		s.m.PostRX(1 << 16)
	}
	waitFor(t, func() bool { st, _ := e.Stats(); return st.Clients == 2 })
	if s.a.Send([][]byte{ethFrame(broadcast, mac(1), 0x88b5, 60)}, nil) != 1 {
		t.Fatal("a could not send")
	}
	s.m.Use(0)
	s.sentToM++
	if len(s.receiveM(t, 1)) != 1 {
		t.Fatal("m did not get a's hello")
	}
	if s.m.Send([][]byte{ethFrame(broadcast, mac(2), 0x88b5, 60)}, nil) != 1 {
		t.Fatal("m could not send")
	}
	s.sentM++
	receiveFrames(t, s.a, 1)
	id, ok := e.macs.Lookup(macKey(2), int64(time.Since(e.start)))
	if !ok {
		t.Fatal("m's MAC not learned")
	}
	s.mID = id
	s.bufs = make([][]byte, 256)
	for i := range s.bufs {
		s.bufs[i] = make([]byte, 2048)
	}
	s.sizes = make([]int, len(s.bufs))
	return s
}

// flow is a UDP frame of flow port numbered seq.
func (s *mqSetup) flow(dst, src [6]byte, sip, dip netip.Addr, port, seq int) []byte {
	payload := make([]byte, 18)
	binary.BigEndian.PutUint16(payload, uint16(seq))
	return testbed.IPv4UDP(src, dst, sip, dip, uint16(port), 5000, payload)
}

func flowSeq(f []byte) (port, seq int) {
	return int(binary.BigEndian.Uint16(f[34:])), int(binary.BigEndian.Uint16(f[42:]))
}

// waitSpread waits until m's pairs are spread over both loops.
func (s *mqSetup) waitSpread(t *testing.T) string {
	t.Helper()
	var w string
	deadline := time.Now().Add(10 * time.Second)
	for w = spreadWorkers(s.e, s.mID); !strings.Contains(w, "0") || !strings.Contains(w, "1"); w = spreadWorkers(s.e, s.mID) {
		if time.Now().After(deadline) {
			t.Fatalf("m's queue pairs not spread over both loops within 10s (workers %q)", w)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return w
}

// roundTrip sends each frames numbered from seq on every pair of m to a
// and on 16 flows from a to m, and checks each flow arrives whole and in
// order, each of m's on one RX ring.
func (s *mqSetup) roundTrip(t *testing.T, seq, each int) {
	t.Helper()
	for i := range each {
		for k := range mqPairs {
			s.m.Use(k)
			for s.m.Send([][]byte{s.flow(mac(1), mac(2), s.ipM, s.ipA, 3000+k, seq+i)}, nil) != 1 {
				time.Sleep(time.Millisecond)
			}
			s.sentM++
		}
	}
	next := map[int]int{}
	for _, f := range receiveFrames(t, s.a, mqPairs*each) {
		port, n := flowSeq(f)
		if _, ok := next[port]; !ok {
			next[port] = seq
		}
		if n != next[port] {
			t.Fatalf("flow %d from m: frame %d after %d", port, n, next[port]-1)
		}
		next[port]++
	}
	for k := range mqPairs {
		if next[3000+k] != seq+each {
			t.Fatalf("flow of m's pair %d: %d of %d frames arrived", k, next[3000+k]-seq, each)
		}
	}
	const flows = 16
	for i := range each {
		for f := range flows {
			for s.a.Send([][]byte{s.flow(mac(2), mac(1), s.ipA, s.ipM, 4000+f, seq+i)}, nil) != 1 {
				time.Sleep(time.Millisecond)
			}
			s.sentToM++
		}
	}
	ringOf := map[int]int{}
	seen := map[int]int{}
	got := 0
	deadline := time.Now().Add(5 * time.Second)
	for got < flows*each && time.Now().Before(deadline) {
		for k := range mqPairs {
			s.m.Use(k)
			n := s.m.Receive(s.bufs, s.sizes, nil)
			s.m.PostRX(n)
			for i := range n {
				port, n := flowSeq(s.bufs[i][:s.sizes[i]])
				if r, ok := ringOf[port]; ok && r != k {
					t.Fatalf("flow %d on m's rings %d and %d", port, r, k)
				}
				ringOf[port] = k
				if _, ok := seen[port]; !ok {
					seen[port] = seq
				}
				if n != seen[port] {
					t.Fatalf("m's ring %d, flow %d: frame %d after %d", k, port, n, seen[port]-1)
				}
				seen[port]++
			}
			got += n
		}
		time.Sleep(time.Millisecond)
	}
	if got != flows*each {
		t.Fatalf("m received %d of %d frames", got, flows*each)
	}
}

// receiveM collects n frames on m's rings.
func (s *mqSetup) receiveM(t *testing.T, n int) [][]byte {
	t.Helper()
	var out [][]byte
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, len(bufs))
	deadline := time.Now().Add(5 * time.Second)
	for len(out) < n && time.Now().Before(deadline) {
		for k := range mqPairs {
			s.m.Use(k)
			c := s.m.Receive(bufs, sizes, nil)
			s.m.PostRX(c)
			for i := range c {
				out = append(out, append([]byte(nil), bufs[i][:sizes[i]]...))
			}
		}
		time.Sleep(time.Millisecond)
	}
	s.m.Use(0)
	return out
}

// checkCounts checks m's port counts every frame it sent and got, once,
// whichever loop moved it, and dropped none.
func (s *mqSetup) checkCounts(t *testing.T) {
	t.Helper()
	st, err := s.e.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Ports {
		if p.ID != s.mID {
			continue
		}
		if p.RxFrames != s.sentM || p.TxFrames != s.sentToM || len(p.Drops) != 0 {
			t.Fatalf("m's port counts %d frames received, %d sent, drops %v; want %d, %d, none",
				p.RxFrames, p.TxFrames, p.Drops, s.sentM, s.sentToM)
		}
		return
	}
	t.Fatalf("m's port %d not listed", s.mID)
}

// A guest with 4 queue pairs on a switch of 2 loops: once its device runs
// quiet, its pairs are served by both loops (0,1,0,1 or 1,0,1,0), each
// flow stays on one ring and in order both ways, the handles on the other
// loop move frames, and its port counts every frame once, its port on
// either loop. Before, all its rings stayed on its port's loop.
func TestVhostUserQueuesSpreadOverWorkers(t *testing.T) {
	for _, mFirst := range []bool{false, true} {
		s := newMQSetupOrdered(t, nil, mFirst)
		want := map[bool]string{false: "1,0,1,0", true: "0,1,0,1"}[mFirst]
		if w := s.waitSpread(t); w != want {
			t.Fatalf("m (connected first: %v) has its pairs served by loops %s, want %s", mFirst, w, want)
		}
		s.roundTrip(t, 1, 20)
		st, err := s.e.Stats()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Ports {
			if p.ID == s.mID && p.Workers != want || p.ID != s.mID && p.Workers != map[bool]string{false: "0", true: "1"}[mFirst] {
				t.Fatalf("port %d listed on workers %q (m is port %d, on %s)", p.ID, p.Workers, s.mID, want)
			}
		}
		rx, tx := handleFrames(t, s.e)
		if rx != 2*20 || tx == 0 {
			t.Fatalf("the other loop's handle read %d frames (want m's 2 pairs' 40) and wrote %d", rx, tx)
		}
		s.checkCounts(t)
		s.checkPairCounts(t, st, 20)
	}
}

// checkPairCounts fails t unless m's port lists its frames by queue pair
// (RxQueues, TxQueues), both loops' shares: each of its pairs sent at
// least each frames, the pairs add up to the port's counts, and the
// frames to m went to at least 2 of its RX rings.
func (s *mqSetup) checkPairCounts(t *testing.T, st Stats, each uint64) {
	t.Helper()
	for _, p := range st.Ports {
		if p.ID != s.mID {
			if p.RxQueues != nil && p.Kind != "vhost-user" {
				t.Errorf("port %d (%s) lists frames by queue pair: %v", p.ID, p.Kind, p.RxQueues)
			}
			continue
		}
		var rx, tx uint64
		used := 0
		for k := range p.TxQueues {
			rx, tx = rx+p.RxQueues[k], tx+p.TxQueues[k]
			if p.TxQueues[k] != 0 {
				used++
			}
		}
		if len(p.RxQueues) != mqPairs || len(p.TxQueues) != mqPairs || rx != p.RxFrames || tx != p.TxFrames || used < 2 {
			t.Fatalf("m's port lists frames by pair received %v, sent %v; want %d pairs adding up to %d and %d, sent on 2 or more",
				p.RxQueues, p.TxQueues, mqPairs, p.RxFrames, p.TxFrames)
		}
		for k, n := range p.RxQueues {
			if n < each {
				t.Fatalf("m's pair %d: %d frames received, it sent %d", k, n, each)
			}
		}
		return
	}
	t.Fatalf("m's port %d not listed", s.mID)
}

// Forwarding to and from a guest whose pairs are spread over 2 loops
// allocates nothing either.
func TestVhostUserSpreadAllocatesNothing(t *testing.T) {
	if raceDetector {
		t.Skip("allocation counts are only meaningful without the race detector")
	}
	s := newMQSetup(t, nil)
	s.waitSpread(t)
	s.roundTrip(t, 1, 4) // every path warmed
	batch := make([][]byte, 16)
	for f := range batch {
		batch[f] = s.flow(mac(2), mac(1), s.ipA, s.ipM, 4000+f, 0)
	}
	toA := make([][]byte, mqPairs)
	for k := range toA {
		toA[k] = s.flow(mac(1), mac(2), s.ipM, s.ipA, 3000+k, 0)
	}
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, 64)
	allocs := testing.AllocsPerRun(20, func() {
		for sent := 0; sent < len(batch); {
			sent += s.a.Send(batch[sent:], nil)
		}
		for k := range mqPairs {
			s.m.Use(k)
			for s.m.Send(toA[k:k+1], nil) != 1 {
			}
		}
		for got := 0; got < len(batch); {
			for k := range mqPairs {
				s.m.Use(k)
				n := s.m.Receive(bufs, sizes, nil)
				s.m.PostRX(n)
				got += n
			}
		}
		for got := 0; got < mqPairs; {
			n := s.a.Receive(bufs, sizes, nil)
			s.a.PostRX(n)
			got += n
		}
	})
	if allocs != 0 {
		t.Fatalf("%.0f allocations per 20 frames through a spread guest", allocs)
	}
	if w := spreadWorkers(s.e, s.mID); w == "" {
		t.Fatal("m's pairs were gathered during the run")
	}
}

// A control message while m's pairs are spread and frames are under way:
// the memory table sent again (the device unmaps the memory the other
// loop was reading) and a ring enabled again. The pairs come back to
// m's loop first: no fault, no guest closed, every frame counted once and
// each flow in order; they spread again once m is quiet. With the gather
// left out, the other loop reads rings whose memory is unmapped.
func TestVhostUserSpreadGathersForControlMessages(t *testing.T) {
	s := newMQSetup(t, nil)
	for round := range 3 {
		s.waitSpread(t)
		gathers := s.e.gathers.Load()
		// Frames on their way in both directions, then the message.
		for k := range mqPairs {
			s.m.Use(k)
			for i := range 30 {
				for s.m.Send([][]byte{s.flow(mac(1), mac(2), s.ipM, s.ipA, 5000+k, i)}, nil) != 1 {
					time.Sleep(time.Millisecond)
				}
				s.sentM++
			}
		}
		s.m.Use(0)
		var err error
		if round%2 == 0 {
			err = s.m.Remap()
		} else {
			err = s.m.Message(vhostguest.ReqSetVringEnable, vhostguest.FlagVersion1, stateMsg(3, 1))
		}
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		got := receiveFrames(t, s.a, mqPairs*30)
		next := map[int]int{}
		for _, f := range got {
			port, n := flowSeq(f)
			if n != next[port] {
				t.Fatalf("round %d: flow %d: frame %d after %d", round, port, n, next[port]-1)
			}
			next[port]++
		}
		if len(got) != mqPairs*30 {
			t.Fatalf("round %d: a got %d of %d frames", round, len(got), mqPairs*30)
		}
		waitFor(t, func() bool { return s.e.gathers.Load() > gathers })
		s.roundTrip(t, 100*(round+1), 10)
		s.checkCounts(t)
		if st, _ := s.e.Stats(); st.Clients != 2 {
			t.Fatalf("round %d: %d clients left", round, st.Clients)
		}
	}
}

// stateMsg is a vhost_vring_state payload: ring index and number.
func stateMsg(index, num uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, index)
	return binary.LittleEndian.AppendUint32(b, num)
}

// A guest that floods the switch with control messages cannot make it
// park its loops more than twice per spreadQuiet: each burst gathers its
// pairs (once), and they spread again only after a quiet second. Two
// other guests keep forwarding meanwhile, every frame delivered. (With
// the quiet second left out, the pairs spread again between the messages
// of a burst.)
func TestVhostUserControlFloodParksBounded(t *testing.T) {
	s := newMQSetup(t, nil)
	b := startGuest(t, s.path, vhostguest.Options{})
	waitFor(t, func() bool { st, _ := s.e.Stats(); return st.Clients == 3 })
	if b.Send([][]byte{ethFrame(broadcast, mac(3), 0x88b5, 60)}, nil) != 1 {
		t.Fatal("b could not send")
	}
	receiveFrames(t, s.a, 1)
	s.waitSpread(t)
	parks0, start := s.e.parks.Load(), time.Now()
	const bursts = 3
	done := make(chan string, 1)
	go func() {
		for burst := range bursts {
			deadline := time.Now().Add(10 * time.Second)
			for spreadWorkers(s.e, s.mID) == "" {
				if time.Now().After(deadline) {
					done <- "m's pairs did not spread again within 10s"
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			for range 200 {
				if err := s.m.Message(vhostguest.ReqSetVringEnable, vhostguest.FlagVersion1, stateMsg(3, 1)); err != nil {
					done <- err.Error()
					return
				}
			}
			_ = burst
		}
		done <- ""
	}()
	frames := make([][]byte, 16)
	for i := range frames {
		frames[i] = ethFrame(mac(3), mac(1), 0x88b5, 60)
	}
	moved := 0
	for {
		select {
		case msg := <-done:
			if msg != "" {
				t.Fatal(msg)
			}
			parks, elapsed := s.e.parks.Load()-parks0, time.Since(start)
			t.Logf("%d bursts of 200 control messages in %v: %d parks, a sent b %d frames meanwhile", bursts, elapsed, parks, moved)
			if limit := 2 * (uint64(elapsed/time.Second) + 1); parks > limit {
				t.Fatalf("%d parks in %v, want at most 2 a second", parks, elapsed)
			}
			if st, _ := s.e.Stats(); st.Clients != 3 {
				t.Fatalf("%d clients left, want 3", st.Clients)
			}
			return
		default:
		}
		for sent := 0; sent < len(frames); {
			sent += s.a.Send(frames[sent:], nil)
		}
		if got := receiveFrames(t, b, len(frames)); len(got) != len(frames) {
			t.Fatalf("b got %d of %d frames during the flood", len(got), len(frames))
		}
		moved += len(frames)
	}
}

// A flow to a spread guest flooded while the guest's MAC is unknown, then
// unicast once it is learned again, arrives in order: the source's loop
// floods it to the loop of its pair itself, the way its unicast frames go.
// (Flooded through the guest's port's loop, the frames took a longer way
// than the unicast ones behind them, which passed them.)
func TestVhostUserSpreadFloodThenUnicastInOrder(t *testing.T) {
	s := newMQSetupOrdered(t, nil, false) // a on the first loop, m's port on the second
	s.waitSpread(t)
	const flows, each = 16, 8
	seq := 0
	for round := range 5 {
		if _, err := s.e.FlushMACs(); err != nil {
			t.Fatal(err)
		}
		send := func(first int) {
			for i := range each {
				for f := range flows {
					for s.a.Send([][]byte{s.flow(mac(2), mac(1), s.ipA, s.ipM, 6000+f, first+i)}, nil) != 1 {
						time.Sleep(time.Millisecond)
					}
					s.sentToM++
				}
			}
		}
		send(seq) // flooded: m's MAC is unknown
		// m speaks again (on its port's own pair), and a hears it: the
		// switch knows where m is from then on.
		s.m.Use(0)
		if s.m.Send([][]byte{ethFrame(mac(1), mac(2), 0x88b5, 60)}, nil) != 1 {
			t.Fatal("m could not send")
		}
		s.sentM++
		if len(receiveFrames(t, s.a, 1)) != 1 {
			t.Fatalf("round %d: a did not hear m", round)
		}
		send(seq + each) // unicast
		next := map[int]int{}
		got := s.receiveM(t, 2*flows*each)
		for _, f := range got {
			port, n := flowSeq(f)
			if _, ok := next[port]; !ok {
				next[port] = seq
			}
			if n != next[port] {
				t.Fatalf("round %d, flow %d: frame %d after %d", round, port, n, next[port]-1)
			}
			next[port]++
		}
		if len(got) != 2*flows*each {
			t.Fatalf("round %d: m got %d of %d frames", round, len(got), 2*flows*each)
		}
		seq += 2 * each
	}
	s.checkCounts(t)
}

// An upgrade while a guest's pairs are spread: the freeze gathers them
// (the handles' counts and queued frames go to the port), the new engine
// adopts the guest with every pair, counts on from the old one's exact
// counts, and spreads the pairs again; flows keep their order. Before the
// freeze gathered them, the record had only the port's loop's share.
func TestVhostUserSpreadThroughUpgrade(t *testing.T) {
	s := newMQSetup(t, nil)
	s.waitSpread(t)
	s.roundTrip(t, 1, 10)
	var thaw func()
	t.Cleanup(func() {
		if thaw != nil {
			thaw()
		}
	})
	f, err := s.e.Freeze(0)
	if err != nil {
		t.Fatal(err)
	}
	thaw = f.Thaw
	if f.Refused != nil {
		t.Fatal(f.Refused)
	}
	for _, p := range f.State.Ports {
		if p.ID == s.mID && (p.Counters.RxFrames != s.sentM || p.Counters.TxFrames != s.sentToM) {
			t.Fatalf("the record counts %d frames from m and %d to it, want %d and %d",
				p.Counters.RxFrames, p.Counters.TxFrames, s.sentM, s.sentToM)
		}
	}
	if s.e.gathers.Load() == 0 {
		t.Fatal("the freeze did not gather m's pairs")
	}
	rec := &handover.Record{Fds: len(f.Fds) + 1,
		Daemon: handover.Daemon{Control: len(f.Fds), Pidfile: -1, Metrics: -1, KeeperAlive: -1, Supervisor: -1, TAP: handover.TAP{Fd: -1}},
		Engine: f.State}
	payload, err := handover.Encode(rec)
	if err != nil {
		t.Fatal(err)
	}
	got, err := handover.Decode(payload, len(f.Fds)+1)
	if err != nil {
		t.Fatal(err)
	}
	fds := make([]int, len(f.Fds))
	for i, fd := range f.Fds {
		if fds[i], err = unix.Dup(fd); err != nil {
			t.Fatal(err)
		}
	}
	lfd, err := unix.Dup(s.e.cfg.Listeners[0].Fd)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(lfd)
	cfg := s.e.cfg
	cfg.Listeners = []Listener{{Fd: lfd, Kind: VhostUser, Path: s.path}}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Adopt(&got.Engine, fds); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run() }()
	t.Cleanup(func() {
		e.Stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	s.e = e
	s.waitSpread(t)
	s.roundTrip(t, 100, 10)
	s.checkCounts(t)
}

// A guest that breaks a ring another loop serves for it (its avail idx
// far past the ring's size) is closed, once, by its port's loop, which
// gathers its pairs first; the violation is counted and the other guests
// keep switching.
func TestVhostUserSpreadHandleViolationClosesGuest(t *testing.T) {
	s := newMQSetup(t, nil)
	w := s.waitSpread(t)
	b := startGuest(t, s.path, vhostguest.Options{})
	waitFor(t, func() bool { st, _ := s.e.Stats(); return st.Clients == 3 })
	home := strings.Split(w, ",")[0] // pair 0 is always on the port's loop
	pair := -1
	for k, l := range strings.Split(w, ",") {
		if l != home {
			pair = k
			break
		}
	}
	mem := s.m.Mem()
	_, avail, _ := s.m.RingOffsets(2*pair + 1)
	idx := binary.LittleEndian.Uint16(mem[avail+2:])
	binary.LittleEndian.PutUint16(mem[avail+2:], idx+4096)
	unix.Write(s.m.KickFD(2*pair+1), binary.LittleEndian.AppendUint64(nil, 1))
	waitFor(t, func() bool { st, _ := s.e.Stats(); return st.Clients == 2 })
	if n := departedDrops(s.e, "vhost-violation"); n != 1 {
		t.Errorf("vhost-violation counted %d times, want 1", n)
	}
	if g := s.e.gathers.Load(); g == 0 {
		t.Error("the guest was closed without its pairs gathered")
	}
	hello := ethFrame(broadcast, mac(3), 0x88b5, 60)
	if b.Send([][]byte{hello}, nil) != 1 {
		t.Fatal("b could not send")
	}
	if got := receiveFrames(t, s.a, 1); len(got) != 1 {
		t.Fatalf("a got %d frames from b after the guest was closed", len(got))
	}
}

// Under --busy-poll a guest's pairs are spread too, and each loop polls
// the rings it serves: frames flow while the loops poll and after they
// went back to sleep (the guest kicks again for the rings of both), and
// across a gather and a spread again. The gather that comes while only
// the other loop polls (its rings' kicks left off) hands those rings
// back asking for kicks again: with the flag left as it was, the port's
// loop, asleep, waited for kicks that never came.
func TestVhostUserQueuesSpreadUnderBusyPoll(t *testing.T) {
	const busy = 300 * time.Millisecond
	s := newMQSetup(t, func(c *Config) { c.BusyPoll = busy })
	w := s.waitSpread(t)
	far := 1 // a pair the other loop serves: pairs alternate
	seq := 1
	for round := range 2 {
		s.roundTrip(t, seq, 10)
		seq += 10
		time.Sleep(2 * busy) // the loops stop polling: kicks again
		s.roundTrip(t, seq, 10)
		seq += 10
		time.Sleep(2 * busy)
		// Only the other loop moves frames, and polls, when the message
		// comes.
		s.m.Use(far)
		// keepTalking, when set, has m ask a question (GET_FEATURES, which
		// changes no ring and reads none) every 100 ms while a waits: its
		// pairs then stay at home, where a kick must bring its frames.
		// One frame, which the loop reads and then polls; four more, which
		// it reads polling (the guest's kicks stay off for them).
		farFrames := func(first int, keepTalking bool) {
			bufs, sizes := make([][]byte, 8), make([]int, 8)
			for i := range bufs {
				bufs[i] = make([]byte, 2048)
			}
			got := 0
			for i := range 5 {
				for s.m.Send([][]byte{s.flow(mac(1), mac(2), s.ipM, s.ipA, 7000, first+i)}, nil) != 1 {
					time.Sleep(time.Millisecond)
				}
				s.sentM++
				for deadline := time.Now().Add(time.Second); i == 0 && !keepTalking && got == 0 && time.Now().Before(deadline); {
					n := s.a.Receive(bufs, sizes, nil)
					s.a.PostRX(n)
					got += n
					time.Sleep(time.Millisecond)
				}
			}
			asked := time.Now()
			for deadline := time.Now().Add(3 * time.Second); got < 5 && time.Now().Before(deadline); {
				n := s.a.Receive(bufs, sizes, nil)
				s.a.PostRX(n)
				got += n
				if keepTalking && time.Since(asked) > 100*time.Millisecond {
					if err := s.m.Message(vhostguest.ReqGetFeatures, vhostguest.FlagVersion1, nil); err != nil {
						t.Fatal(err)
					}
					if _, err := s.m.Reply(vhostguest.ReqGetFeatures); err != nil {
						t.Fatal(err)
					}
					asked = time.Now()
				}
				time.Sleep(time.Millisecond)
			}
			if got != 5 {
				t.Fatalf("round %d: a got %d of 5 frames from m's pair %d (loops %s)", round, got, far, w)
			}
		}
		farFrames(100*round, false)
		gathers := s.e.gathers.Load()
		if err := s.m.Remap(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return s.e.gathers.Load() > gathers })
		s.m.Use(far)
		farFrames(100*round+5, true)
		s.roundTrip(t, seq, 10)
		seq += 10
		w = s.waitSpread(t)
	}
	s.roundTrip(t, seq, 10)
	if rx, tx := handleFrames(t, s.e); rx == 0 || tx == 0 {
		t.Fatalf("the other loop's handle read %d frames and wrote %d", rx, tx)
	}
	s.checkCounts(t)
}
