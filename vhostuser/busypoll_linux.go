package vhostuser

// Busy-polling: an engine that gives the switch a core may look at the
// guest's TX ring instead of waiting for its kicks, as DPDK's PMD threads
// do. While it does, the device leaves the guest's kicks off once a read
// turned them off, so a busy guest posts frames without a system call
// (an eventfd write, or a VM exit through QEMU's ioeventfd) and the
// switch takes them without one (an epoll report and a read of the kick).

// SetBusyPoll says whether the caller polls the TX ring (TXPending)
// rather than waiting for its kick fd. Off again, kicks are allowed at
// the avail idx last taken, and pending says the ring holds frames: read
// them now, as the guest posted them without kicking and will not kick
// for them.
func (s *Queues) SetBusyPoll(on bool) (pending bool, err error) {
	defer recoverFault(&err)
	d := s.dev
	for i := 1; i < 2*max(d.pairs, 1); i += 2 {
		if s.own&(1<<(i/2)) == 0 {
			continue
		}
		q := &d.q[i]
		q.vq.polled = on
		if on || !q.started || q.vq.avail == nil || q.vq.kicksAllowed {
			continue
		}
		q.vq.allowKicks(q.vq.lastAvail)
		pending = pending || q.vq.availIdx() != q.vq.lastAvail
	}
	return pending, nil
}

// TXPending says the guest has posted TX frames not read yet, on any of
// its TX rings, by loading their avail idx: no system call, for a caller
// that polls. A fault on guest memory answers true, so that the read that
// follows reports it.
func (s *Queues) TXPending() bool { return s.hasAvail(1) }

// RXPending says the guest has posted RX buffers not filled yet on one of
// its RX rings: frames waiting for it may be written now.
func (s *Queues) RXPending() bool { return s.hasAvail(0) }

// hasAvail says a ring of the pairs' RX (dir 0) or TX (dir 1) rings
// holds avail entries not taken; of the pairs s serves.
func (s *Queues) hasAvail(dir int) bool {
	d := s.dev
	for i := dir; i < 2*max(d.pairs, 1); i += 2 {
		if s.own&(1<<(i/2)) != 0 && d.q[i].hasAvail() {
			return true
		}
	}
	return false
}

func (q *queue) hasAvail() bool {
	if !q.started || !q.enabled || q.vq.avail == nil {
		return false
	}
	pending, err := q.vq.loadHasAvail()
	return pending || err != nil
}

// loadHasAvail says the avail idx is past lastAvail; err is a fault on
// guest memory (recoverFault must be the deferred function itself).
func (q *virtq) loadHasAvail() (pending bool, err error) {
	defer recoverFault(&err)
	return q.availIdx() != q.lastAvail, nil
}
