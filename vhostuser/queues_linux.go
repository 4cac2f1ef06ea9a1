package vhostuser

import "math/bits"

// Queues is the data path of some of a device's queue pairs: what reads
// their TX rings and writes their RX rings, with that work's scratch and
// counters. A device serves every pair through its own (Device embeds
// it). Serve hands some pairs to a Queues of their own, so that a
// multi-queue guest's pairs can be served by several goroutines at once
// (the engine's --workers): each ring is then read or written by the one
// Queues that owns its pair, and the Queues share only what no data path
// writes (the memory table, the rings' addresses, the features), which
// holds still as long as no control message is handled.
//
// So the caller must take every pair back (Rejoin) before it lets the
// device handle its socket (HandleSocket), or close it, and must not use
// a Queues while it does. Each Queues is not safe for concurrent use: one
// goroutine at a time.
type Queues struct {
	dev *Device
	// own has bit k set for each pair k served here.
	own uint8
	// nextTX is the TX pair a read starts with, in turn.
	nextTX int
	stats  Stats
	tx     txRules // ReadTX's, kept here so the batch does not allocate them
	// large is Config.Large for this data path's reads: the caller's
	// buffers differ from one Queues to another.
	large func(slot int) []byte

	// rests are the last read's split frames' rests, by slot (SplitTX).
	// rxOpen has bit i set while RX ring i holds frames WriteRXFrom wrote
	// and FlushRX has not published, in runs[i/2].
	rests   []txRest
	isSplit []bool
	rxOpen  uint16
	runs    [MaxQueuePairs]rxBatch
	head    [1][]byte // WriteRXFrom's frame head, the one frame of its run

	drain [8]byte // a kick eventfd's counter, read and thrown away
}

// allPairs names every queue pair, as a mask of Queues.own.
const allPairs = 1<<MaxQueuePairs - 1

// Serve hands the queue pairs of mask pairs (bit k: pair k) from the
// device's own data path to a new Queues, which large gives bigger
// buffers to as Config.Large does; pairs another Queues serves already
// stay there. The device's data path publishes what it wrote and gives
// back what it held on those rings first. Call it only while no Queues
// of the device is in use.
func (d *Device) Serve(pairs uint8, large func(slot int) []byte) *Queues {
	pairs &= d.own
	d.FlushRX()
	d.ReleaseTX()
	d.own &^= pairs
	return &Queues{dev: d, own: pairs, large: large}
}

// Rejoin takes back the pairs s served (Serve) into the device's own data
// path, with s's counters; s serves none from then on. Call it only while
// no Queues of the device is in use.
func (d *Device) Rejoin(s *Queues) {
	if s.dev != d || s == &d.Queues {
		return
	}
	s.FlushRX()
	s.ReleaseTX()
	d.own |= s.own
	s.own = 0
	d.stats.add(&s.stats)
	s.stats = Stats{}
}

// Pairs is the mask of pairs s serves (bit k: pair k).
func (s *Queues) Pairs() uint8 { return s.own }

// ServesAll says s serves every pair of its device: it is the device's
// own data path, and no pair is served apart (Serve).
func (s *Queues) ServesAll() bool { return s.own == allPairs }

// Stats returns the counters of s's own work: a device's, for its own
// data path, include those of the Queues rejoined.
func (s *Queues) Stats() Stats { return s.stats }

// SpreadPairs is the mask of pairs that may be served apart now (Serve):
// those with a ring that runs, when more than one has, and the device
// runs with nothing for its own data path alone to do: no dirty log
// (written by whoever writes a ring, it is kept on one goroutine), no
// announcement owed. 0 when the pairs should stay together.
func (d *Device) SpreadPairs() uint8 {
	if !d.Ready() || d.Stopped() || d.log.mem != nil || d.announcePending {
		return 0
	}
	var m uint8
	for k := range max(d.pairs, 1) {
		if d.q[2*k].running() || d.q[2*k+1].running() {
			m |= 1 << k
		}
	}
	if bits.OnesCount8(m) < 2 {
		return 0
	}
	return m
}

// RXPair is the pair whose RX ring a frame beginning with head goes to
// (WriteRXBatch's choice, by its flow), and false when no RX ring runs.
// While no control message is handled the choice holds still, so a
// caller that spreads the pairs over goroutines (Serve) may give each
// frame to the Queues that owns its pair.
func (d *Device) RXPair(head []byte) (int, bool) {
	ring, ok := d.rxRing(head)
	return ring / 2, ok
}
