package engine

import "time"

// Kick coalescing (Config.Coalesce, --coalesce), the default mode's answer
// to a guest that sends without pause, as a NIC's interrupt coalescing
// (ethtool's rx-usecs) and Linux's deferred NAPI interrupts
// (napi_defer_hard_irqs with gro_flush_timeout) are.
//
// A loop that sleeps in its poller is woken by its guests' kicks: an
// eventfd write in the guest (or a VM exit through QEMU's ioeventfd) and
// an interrupt between cores, each paid by the guest that feeds the
// switch. A guest sending a few million frames a second into a switch
// that keeps up empties its ring before the next frame, so it kicks every
// few dozen frames: 50 000 kicks a second measured with testpmd guests,
// enough of the guest's core to make it the bottleneck, which keeps the
// switch idle and the kicks coming (README, "How vknetd compares").
//
// So once a loop has read a batch or more from its rings between two
// sleeps, it leaves the guests' kicks off (the rings are polled, as with
// --busy-poll) and sleeps at most Coalesce at a time, looking at the rings
// each time it wakes. A guest that fills half its ring meanwhile still
// kicks (vhostuser's polled rings ask for that). When a whole Coalesce
// passes without a frame from a ring, kicks go back on and the loop sleeps
// as long as it likes: idle guests cost nothing, and a guest sending less
// than a batch between two sleeps is never coalesced, so its frames wait
// for nothing. While frames flow, one waits at most about Coalesce.

// DefaultCoalesce is the daemon's --coalesce: the time a testpmd guest
// takes to post a few dozen frames, far less than it takes to fill a
// 256-entry ring (and a guest that does still kicks at half of it).
const DefaultCoalesce = 20 * time.Microsecond

// coalesce decides, before the loop sleeps for up to timeout, whether it
// starts or stops coalescing, and returns how long it may sleep. again
// says it stopped and its rings may hold frames: compute the timeout anew.
func (l *loop) coalesce(timeout time.Duration) (_ time.Duration, again bool) {
	moved := l.ringMoved - l.sleptAt
	if moved > 0 {
		l.ringMovedAt = l.now
	}
	// Without BusyPoll (New clears Coalesce with it), only coalescing
	// makes the loop poll its rings.
	switch {
	case l.polling && moved == 0 && l.now-l.ringMovedAt >= int64(l.e.cfg.Coalesce):
		l.stopPolling() // a port whose guest posted meanwhile is read next
		return timeout, true
	case !l.polling && moved >= uint64(l.e.cfg.Batch) && l.ringPorts > 0:
		l.startPolling()
	}
	l.sleptAt = l.ringMoved
	if l.polling {
		timeout = min(timeout, l.e.cfg.Coalesce)
	}
	return timeout, false
}
