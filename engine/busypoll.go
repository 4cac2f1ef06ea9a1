package engine

// Busy-polling (Config.BusyPoll, --busy-poll): for an operator who gives
// the switch a core, as DPDK's PMD threads and Linux's SO_BUSY_POLL do.
// After a round that moved frames, the loop does not sleep in its poller
// for BusyPoll: it runs rounds that look at its ports' shared rings
// (transportCaps.rings) and asks the poller only every spinsPerPoll
// rounds, without waiting, for everything else (sockets, the TAP,
// control messages, kicks of guests that joined meanwhile). While it
// polls, its vhost-user guests post without kicking: no eventfd write on
// their side, no epoll report and kick read on ours. BusyPoll after the
// last frame moved it tells them to kick again, looks once more, and
// sleeps: idle guests cost nothing once the duration is over, and
// nothing at all with BusyPoll 0, the default.

// spinsPerPoll is how many polling rounds run between two looks at the
// poller: a socket's frame waits at most that many rounds (a few
// microseconds with a handful of guests), and the system call is paid
// once for them all.
const spinsPerPoll = 32

// spin is one busy-polling round.
func (l *loop) spin() error {
	if !l.polling {
		l.startPolling()
	}
	if l.spins++; l.spins >= spinsPerPoll {
		l.spins = 0
		_, err := l.step(0)
		return err
	}
	l.serveRound(nil)
	return nil
}

// startPolling tells the ports with rings that the loop polls them.
func (l *loop) startPolling() {
	l.polling = true
	for _, ports := range [2][]*port{l.live, l.handles} {
		for _, p := range ports {
			if p.caps.rings != nil && !p.dead {
				if _, err := p.caps.rings.busyPoll(true); err != nil {
					l.kill(p, err)
				}
			}
		}
	}
}

// stopPolling tells them it no longer does, before the loop sleeps; a
// port whose peer posted frames meanwhile, without notifying, is read in
// the next round.
func (l *loop) stopPolling() {
	l.polling = false
	l.spins = 0
	for _, ports := range [2][]*port{l.live, l.handles} {
		for _, p := range ports {
			if p.caps.rings == nil || p.dead {
				continue
			}
			read, err := p.caps.rings.busyPoll(false)
			switch {
			case err != nil:
				l.kill(p, err)
			case read:
				l.readNextRound(p)
			}
		}
	}
	l.reap()
}

// pollRings serves the ports whose rings hold work: frames to read, or
// room for the frames queued to them. A port to be read anyway (carried
// to this round or the next) is not looked at for frames, nor one with
// nothing queued for room.
func (l *loop) pollRings() {
	for _, ports := range [2][]*port{l.live, l.handles} {
		for _, p := range ports {
			r := p.caps.rings
			if r == nil || p.dead {
				continue
			}
			wantRead, wantWrite := !p.readAgain, p.txq.Len() > 0 && !p.txClosed
			if !wantRead && !wantWrite {
				continue
			}
			read, write := r.pollRings(wantRead, wantWrite)
			if write {
				l.transmit(p)
			}
			if read {
				l.serve(p)
			}
		}
	}
}
