package engine

import (
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/handover"
	"github.com/vknetd/vknetd/vhostuser"
)

// vhostRecord is a vhost-user port's handover.Port.Vhost: the device's
// state and where its fds are in the record's list.
type vhostRecord struct {
	Device  vhostuser.State `json:"device"`
	Regions []int           `json:"regions"`
	// Kick and Call: one per ring the device exported (vhostuser.State's
	// Queues), -1 for none.
	Kick []int `json:"kick"`
	Call []int `json:"call"`
	// Held: written for a supervisor while the device ran (held), not at
	// an upgrade. Its ring indices are stale, so the device is taken up
	// with vhostuser.Recover, and its fd indices count from the port's Fd
	// (the supervisor moves that one alone when it lists the fds it holds).
	Held bool `json:"held,omitempty"`
}

// A held device's fds fit a notice: its socket, at most 8 memory regions
// (claimVhostFDs), each ring's kick and call.
var _ [MaxHeldFds - (1 + 8 + 2*vhostuser.MaxQueues)]struct{}

func (t *vhostTransport) holding() bool { return t.heldSent }

func (t *vhostTransport) released() { t.heldSent, t.heldStale = false, true }

// held writes the device's state for a supervisor with copies of its
// fds, once the device is ready: a device mid negotiation, stopped or
// being migrated has nothing a new daemon could take up (its guest
// reconnects after a crash).
func (t *vhostTransport) held(hp *handover.Port) ([]int, heldStatus) {
	nothing := func() ([]int, heldStatus) {
		t.heldStale = false
		if t.heldSent {
			t.heldSent = false
			return nil, heldNothing
		}
		return nil, heldUnchanged
	}
	if t.spread() {
		return nil, heldLater // its rings are read elsewhere: after they come back
	}
	if !t.dev.Ready() || t.dev.Stopped() {
		return nothing()
	}
	st, fds, err := t.dev.Export()
	switch {
	case errors.Is(err, vhostuser.ErrMidMessage):
		return nil, heldLater // its rest comes, and the state with it
	case err != nil:
		return nothing()
	}
	var own []int
	failed := false
	add := func(fd int) int {
		if fd < 0 || failed {
			return -1
		}
		c, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			failed = true // out of fds: a crash would lose this guest
			return -1
		}
		own = append(own, c)
		return len(own) - 1
	}
	rec := vhostRecordOf(st, fds, hp, add)
	rec.Held = true
	if hp.Vhost, err = json.Marshal(rec); err != nil || failed {
		closeOwned(own)
		return nothing()
	}
	t.heldStale, t.heldSent = false, true
	return own, heldNow
}

// export writes a vhost-user device's state, its record with its fds.
func (t *vhostTransport) export(x *exportScope, hp *handover.Port) error {
	st, fds, err := t.dev.Export()
	if err != nil {
		return fmt.Errorf("port %d (%s): %w", hp.ID, hp.Name, err)
	}
	hp.Vhost, err = json.Marshal(vhostRecordOf(st, fds, hp, x.addFd))
	return err
}

// vhostRecordOf is a device's exported state with its fds numbered by
// addFd, which keeps them: the socket as hp's fd, then its memory regions,
// then each ring's kick and call. An upgrade and a supervisor's held copy
// number them alike.
func vhostRecordOf(st vhostuser.State, fds vhostuser.FDs, hp *handover.Port, addFd func(int) int) vhostRecord {
	rec := vhostRecord{Device: st}
	hp.Fd = addFd(fds.Socket)
	for _, fd := range fds.Regions {
		rec.Regions = append(rec.Regions, addFd(fd))
	}
	for i := range st.Queues {
		rec.Kick = append(rec.Kick, addFd(fds.Kick[i]))
		rec.Call = append(rec.Call, addFd(fds.Call[i]))
	}
	return rec
}

// adoptOther is vhostTransport.export backwards; after finishes the port once it is
// made and has joined its user. A device a supervisor held (vhostRecord.Held)
// is taken up with its rings resumed from guest memory; one that cannot
// be is closed here, every fd of it this process has, so that its guest
// sees its socket close and reconnects.
func (l *loop) adoptOther(hp *handover.Port, fd int, claim func(int) (int, error)) (transport, func(*port) error, error) {
	if hp.Kind != "vhost-user" || len(hp.Vhost) == 0 {
		return nil, nil, fmt.Errorf("a %s port cannot be adopted", hp.Kind)
	}
	var rec vhostRecord
	if err := json.Unmarshal(hp.Vhost, &rec); err != nil {
		return nil, nil, fmt.Errorf("vhost-user state: %w", err)
	}
	fds, claimed, err := claimVhostFDs(&rec, hp, fd, claim)
	if err != nil {
		if rec.Held {
			closeOwned(append(claimed, fd))
		}
		return nil, nil, err
	}
	e := l.e
	vt := newVhostScratch(&l.io)
	mem := &guestMemory{budget: &e.guestMem}
	id, name := hp.ID, hp.Name
	offloads := e.cfg.Offloads && e.pool.CapLarge() > 0
	take := vhostuser.Adopt
	if rec.Held {
		take = vhostuser.Recover // after a crash; it closes the fds if it refuses
	}
	dev, err := take(vhostuser.Config{Note: func(msg string) {
		e.clientLog.Info("vhost-user request ignored", "port", id, "client", name, "request", msg)
	}, Offloads: offloads, Large: vt.large, Memory: mem.set, Fds: (&guestFds{budget: &e.guestFds}).set}, rec.Device, fds)
	if err != nil {
		return nil, nil, err
	}
	vt.dev, vt.q = dev, &dev.Queues
	dev.SplitTX(splitHead, oneCopyOver)
	vt.offloads = dev.Offloads() != 0
	after := func(p *port) error {
		mem.joined(p.user)
		p.offloads = dev.Offloads()
		w := kickFDs(dev)
		if err := l.watch(p, &w); err != nil {
			return err
		}
		// Frames the guest posted while no one read wait in its rings,
		// and it may not kick for them again.
		if dev.Ready() {
			l.readNextRound(p)
		}
		return nil
	}
	return vt, after, nil
}

// claimVhostFDs takes the fds rec names, besides the socket fd, and
// returns those it took whatever happens.
func claimVhostFDs(rec *vhostRecord, hp *handover.Port, fd int, claim func(int) (int, error)) (fds vhostuser.FDs, claimed []int, err error) {
	if len(rec.Regions) > 8 {
		return fds, nil, fmt.Errorf("vhost-user state: %d memory regions", len(rec.Regions))
	}
	if len(rec.Kick) > vhostuser.MaxQueues || len(rec.Call) != len(rec.Kick) {
		return fds, nil, fmt.Errorf("vhost-user state: %d kick and %d call fds", len(rec.Kick), len(rec.Call))
	}
	take := func(i int) (int, error) {
		if rec.Held && i >= 0 {
			// Counted from the port's own fd, which is the first.
			if i == 0 || i >= MaxHeldFds {
				return -1, fmt.Errorf("descriptor %d of a held vhost-user device", i)
			}
			i += hp.Fd
		}
		fd, err := claim(i)
		if fd >= 0 {
			claimed = append(claimed, fd)
		}
		return fd, err
	}
	fds = vhostuser.NoFDs()
	fds.Socket = fd
	for _, i := range rec.Regions {
		r, err := take(i)
		if err != nil || r < 0 {
			return fds, claimed, fmt.Errorf("vhost-user memory region: %v", err)
		}
		fds.Regions = append(fds.Regions, r)
	}
	for q := range rec.Kick {
		if fds.Kick[q], err = take(rec.Kick[q]); err != nil {
			return fds, claimed, err
		}
		if fds.Call[q], err = take(rec.Call[q]); err != nil {
			return fds, claimed, err
		}
	}
	return fds, claimed, nil
}

// heldVhost says hp is a vhost-user device a supervisor held.
func heldVhost(hp *handover.Port) bool {
	var rec struct {
		Held bool `json:"held"`
	}
	return hp.Kind == "vhost-user" && json.Unmarshal(hp.Vhost, &rec) == nil && rec.Held
}
