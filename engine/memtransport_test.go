package engine

import (
	"bytes"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/handover"
	"github.com/vknetd/vknetd/mactable"
	"github.com/vknetd/vknetd/ring"
)

// memTransport is a port whose peer is the test: frames go in and come out
// as byte slices in memory, so a test sets exactly what a peer offers and
// takes, round by round, with no socket's buffering in between. Its one
// fd is a pipe the test rings when it has changed something (frames to
// read, room to write), as a guest kicks its vhost-user rings: the engine
// polls it like any port's and asks the transport what the ring means.
type memTransport struct {
	pool *ring.Pool
	bell [2]int   // a pipe: [0] is the port's fd, polled by the engine; [1] is rung by the test
	in   [][]byte // frames the peer sends, oldest first
	out  [][]byte // frames the switch sent the peer, copied
	// room is how many more frames the peer takes before it pushes back;
	// -1 is no limit.
	room   int
	reads  int // read calls
	closed bool
	// stopped: the peer's device is stopped, as a vhost-user device is
	// by GET_VRING_BASE; said in the next readiness.
	stopped bool
}

func (*memTransport) caps() transportCaps {
	return transportCaps{kind: "mem", eventSource: true, writeReadyElsewhere: true}
}

// read hands the switch the frames waiting, a batch at most. A frame
// larger than a pool buffer is dropped here, as a vhost-user device drops
// one longer than the switch's buffers, and comes back in the result.
func (t *memTransport) read(refs []ring.Ref, _ bool) readResult {
	t.reads++
	var res readResult
	for res.n < len(refs) && len(t.in) > 0 {
		f := t.in[0]
		t.in = t.in[1:]
		buf := t.pool.Buf(refs[res.n])
		if len(f) > len(buf) {
			res.dropped.dropReceived(DropOversize, 1)
			continue
		}
		t.pool.SetLen(refs[res.n], copy(buf, f))
		res.n++
	}
	res.buffered = len(t.in) > 0
	return res
}

// write takes what the peer has room for.
func (t *memTransport) write(q txView) writeResult {
	n := q.Len()
	if t.room >= 0 {
		n = min(n, t.room)
		t.room -= n
	}
	var res writeResult
	for i := 0; i < n; i++ {
		f := t.pool.Frame(q.At(i))
		t.out = append(t.out, append([]byte(nil), f...))
		res.done++
		res.frames++
		res.bytes += uint64(len(f))
	}
	res.blocked = n < q.Len()
	return res
}

// ready: the test rang; whatever it changed may mean either way.
func (t *memTransport) ready(uint8, bool) readiness {
	var buf [64]byte
	for {
		if n, err := unix.Read(t.bell[0], buf[:]); n <= 0 || err != nil {
			break
		}
	}
	return readiness{read: len(t.in) > 0, write: true, stopped: t.stopped, stateKnown: true}
}

// export refuses: an in-memory peer cannot pass to another process.
func (t *memTransport) export(_ *exportScope, hp *handover.Port) error {
	return fmt.Errorf("port %d (%s %s) cannot be handed over", hp.ID, hp.Kind, hp.Name)
}

func (t *memTransport) close() {
	unix.Close(t.bell[0])
	unix.Close(t.bell[1])
	t.closed = true
}

// memPeer is the test's end of a memTransport port.
type memPeer struct {
	t    *memTransport
	port *port
}

// attachMem adds a port on a memTransport to the first loop, as accept
// adds a client.
func (s *testSwitch) attachMem() *memPeer { return s.attachMemTo(s.l) }

// attachMemTo adds a port on a memTransport to loop l.
func (s *testSwitch) attachMemTo(l *loop) *memPeer {
	t := s.newMemTransport(l)
	return &memPeer{t: t, port: s.attachTransport(l, t, t.bell[0])}
}

// newMemTransport is a memTransport on l's pool, its bell made.
func (s *testSwitch) newMemTransport(l *loop) *memTransport {
	s.t.Helper()
	t := &memTransport{pool: l.pool, room: -1}
	if err := unix.Pipe(t.bell[:]); err != nil {
		s.t.Fatal(err)
	}
	for _, fd := range t.bell {
		unix.SetNonblock(fd, true)
		unix.CloseOnExec(fd)
	}
	return t
}

// attachTransport adds a port on t, polled on fd, to loop l.
func (s *testSwitch) attachTransport(l *loop, t transport, fd int) *port {
	s.t.Helper()
	id, ok := s.e.ports.reserve(s.e.cfg.MaxClients, false)
	if !ok {
		s.t.Fatal("no port number left")
	}
	p := l.openPort(id, t, fd, "mem")
	s.e.joinUser(p)
	if err := l.adopt(p); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// ring tells the switch the peer changed something.
func (m *memPeer) ring() { unix.Write(m.t.bell[1], []byte{1}) }

// send queues frames for the switch to read.
func (m *memPeer) send(frames ...[]byte) {
	m.t.in = append(m.t.in, frames...)
	m.ring()
}

// take returns what the switch sent the peer since the last take.
func (m *memPeer) take() [][]byte {
	out := m.t.out
	m.t.out = nil
	return out
}

// setRoom lets the peer take n more frames (-1: any number).
func (m *memPeer) setRoom(n int) {
	m.t.room = n
	m.ring()
}

// The loop's fairness rule (step), on ports that offer exactly what the
// test says: a port with a thousand frames waiting is read for one batch
// per round, and every other port's frame of the round is forwarded in
// that round.
func TestMemFloodDelaysOthersByOneBatchAtMost(t *testing.T) {
	const batch = 4
	s := newTestSwitch(t, false, mactable.Config{}, func(c *Config) { c.Batch = batch })
	flooder, receiver := s.attachMem(), s.attachMem()
	quiet := []*memPeer{s.attachMem(), s.attachMem(), s.attachMem()}
	var flood [][]byte
	for i := 0; i < 1000; i++ {
		flood = append(flood, ethFrame(broadcast, mac(1), 0x0800, 60))
	}
	flooder.send(flood...)
	for round := 0; round < 20; round++ {
		for i, q := range quiet {
			f := ethFrame(broadcast, mac(byte(2+i)), 0x0800, 60)
			f[20] = byte(round)
			q.send(f)
		}
		reads, rx := flooder.t.reads, flooder.port.cnt.rxFrames
		if _, err := s.l.step(0); err != nil {
			t.Fatal(err)
		}
		if got := flooder.t.reads - reads; got != 1 {
			t.Fatalf("round %d: the flooder was read %d times, want once", round, got)
		}
		if got := flooder.port.cnt.rxFrames - rx; got != batch {
			t.Fatalf("round %d: the flooder was read for %d frames, want one batch (%d)", round, got, batch)
		}
		fromQuiet := 0
		for _, g := range receiver.take() {
			if g[11] != 1 {
				if g[20] != byte(round) {
					t.Fatalf("round %d: the receiver got a quiet port's frame of round %d", round, g[20])
				}
				fromQuiet++
			}
		}
		if fromQuiet != len(quiet) {
			t.Fatalf("round %d: %d of the %d quiet ports' frames got through in their round", round, fromQuiet, len(quiet))
		}
		for _, q := range quiet {
			q.take()
		}
	}
	s.pump()
	if got := flooder.port.cnt.rxFrames; got != 1000 {
		t.Fatalf("the flooder's frames read: %d of 1000", got)
	}
}

// A step whose poll reports nothing while a port is carried (a busy ring
// its guest does not kick) reads that port again, a batch a round, until
// the step has moved pollMoved frames (read and written) or run
// pollRounds rounds, saving the epoll_waits between; a step whose poll
// reports a port is one round, so the reported port's frame goes in it
// and the busy port is read once. The bound is in frames: a loop with
// one busy port (a worker's share) polls as often per frame as a loop
// with several.
func TestMemBusyPortReadUntilPollMovedPerPoll(t *testing.T) {
	for _, c := range []struct{ batch, want int }{
		// 4 read and 8 written a round: the rounds' bound comes first.
		{4, pollRounds},
		// 32 read and 64 written a round: 6 rounds move 576 >= 512.
		{32, (pollMoved + 95) / 96},
	} {
		t.Run(fmt.Sprintf("batch=%d", c.batch), func(t *testing.T) {
			testBusyPortReadsPerPoll(t, c.batch, c.want)
		})
	}
}

func testBusyPortReadsPerPoll(t *testing.T, batch, perPoll int) {
	s := newTestSwitch(t, false, mactable.Config{}, func(c *Config) { c.Batch = batch })
	busy, receiver, quiet := s.attachMem(), s.attachMem(), s.attachMem()
	var flood [][]byte
	for i := 0; i < 10*pollRounds*batch; i++ {
		flood = append(flood, ethFrame(broadcast, mac(1), 0x0800, 60))
	}
	busy.send(flood...)
	if _, err := s.l.step(0); err != nil { // the ring's report: one round
		t.Fatal(err)
	}
	for step := 0; step < 8; step++ {
		reads := busy.t.reads
		if step%2 == 1 {
			quiet.send(ethFrame(broadcast, mac(2), 0x0800, 60))
		}
		if _, err := s.l.step(0); err != nil {
			t.Fatal(err)
		}
		want := perPoll
		if step%2 == 1 {
			want = 1
		}
		if got := busy.t.reads - reads; got != want {
			t.Fatalf("step %d: the busy port was read %d times, want %d", step, got, want)
		}
		fromQuiet := 0
		for _, g := range receiver.take() {
			if g[11] == 2 {
				fromQuiet++
			}
		}
		if fromQuiet != step%2 {
			t.Fatalf("step %d: %d frames of the quiet port got through, want %d", step, fromQuiet, step%2)
		}
		quiet.take()
	}
}

// A flood reaches every other port, every frame, in order, and the
// counters say so exactly.
func TestMemFloodReachesEveryPortInOrder(t *testing.T) {
	s := newTestSwitch(t, false, mactable.Config{}, nil)
	src := s.attachMem()
	var others []*memPeer
	for i := 0; i < 5; i++ {
		others = append(others, s.attachMem())
	}
	var frames [][]byte
	for i := 0; i < 300; i++ {
		f := ethFrame(broadcast, mac(1), 0x0800, 60+i)
		frames = append(frames, f)
	}
	src.send(frames...)
	s.pump()
	for i, o := range others {
		got := o.take()
		if len(got) != len(frames) {
			t.Fatalf("port %d got %d of %d frames", i, len(got), len(frames))
		}
		for j := range got {
			if !bytes.Equal(got[j], frames[j]) {
				t.Fatalf("port %d: frame %d out of order or changed", i, j)
			}
		}
		if o.port.cnt.txFrames != uint64(len(frames)) || o.port.cnt.drops != ([numDrops]uint64{}) {
			t.Fatalf("port %d: counted %d sent, drops %v", i, o.port.cnt.txFrames, o.port.cnt.drops)
		}
	}
	if src.port.cnt.rxFrames != uint64(len(frames)) || len(src.take()) != 0 {
		t.Fatalf("the source counted %d received, or got its own frames back", src.port.cnt.rxFrames)
	}
}

// A peer that takes nothing costs exactly its queue: the rest is dropped
// as tx-queue-full, and once it has room it gets the queue's frames, the
// oldest, in order. What a transport drops itself comes back in its
// result and is counted on the port.
func TestMemStuckPeerQueueAndTransportDrops(t *testing.T) {
	const queueLen = 16
	s := newTestSwitch(t, false, mactable.Config{}, func(c *Config) { c.QueueLen = queueLen })
	src, stuck := s.attachMem(), s.attachMem()
	stuck.setRoom(0)
	var frames [][]byte
	for i := 0; i < 100; i++ {
		f := ethFrame(broadcast, mac(1), 0x0800, 60)
		f[20] = byte(i)
		frames = append(frames, f)
	}
	src.send(frames...)
	s.pump()
	if got := stuck.port.txq.Len(); got != queueLen {
		t.Fatalf("the stuck peer's queue holds %d, want %d", got, queueLen)
	}
	if got := stuck.port.cnt.drops[DropQueueFull]; got != 100-queueLen {
		t.Fatalf("tx-queue-full drops %d, want %d", got, 100-queueLen)
	}
	if !stuck.port.writeArmed {
		t.Fatal("the stuck peer is not waiting for room")
	}
	stuck.setRoom(-1)
	s.pump()
	got := stuck.take()
	if len(got) != queueLen {
		t.Fatalf("once it had room the peer got %d frames, want its queue's %d", len(got), queueLen)
	}
	for i := range got {
		if !bytes.Equal(got[i], frames[i]) {
			t.Fatalf("frame %d of the queue is not the %dth sent", i, i)
		}
	}
	if stuck.port.writeArmed || stuck.port.cnt.txFrames != queueLen {
		t.Fatalf("after the queue went: still waiting %v, %d counted sent", stuck.port.writeArmed, stuck.port.cnt.txFrames)
	}

	// A frame the transport cannot take into a buffer is counted as
	// received and dropped, from its result.
	rx := src.port.cnt.rxFrames
	src.send(make([]byte, s.e.pool.Size()+1), ethFrame(broadcast, mac(1), 0x0800, 60))
	s.pump()
	if src.port.cnt.rxFrames != rx+2 || src.port.cnt.drops[DropOversize] != 1 {
		t.Fatalf("received %d (want %d), oversize drops %d (want 1)", src.port.cnt.rxFrames, rx+2, src.port.cnt.drops[DropOversize])
	}
	if got := stuck.take(); len(got) != 1 {
		t.Fatalf("the frame after the dropped one: %d delivered, want 1", len(got))
	}
}
