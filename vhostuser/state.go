//go:build linux

package vhostuser

import (
	"errors"
	"fmt"
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// A device's state can move to another process (vknetctl upgrade): Export
// writes it down with the fds it stands on, and Adopt builds the same
// device around copies of them in the new process, mapping the guest's
// memory again. The guest notices nothing: its rings, indices, features
// and eventfds are the same, and no message goes over the socket.
//
// Export is called between two calls of the data path, when every used
// entry taken is published (ReadTXBatch and WriteRXBatch publish before
// they return), so the indices below are all the rings' state.
//
// A device the front-end is migrating (dirty logging: LOG_ALL, or a log
// given) is not handed over: Export refuses, so the upgrade is refused
// and the old daemon keeps serving and logging. Carrying the log would
// mean carrying its fd and every bit set since the front-end last read
// it, for a window of seconds; an upgrade after the migration costs
// nothing. What the migration leaves behind outside that window is
// carried: the rings' logging flags and addresses (a later migration logs
// the used rings where the front-end said), a RARP announcement not sent
// yet, and which rings GET_VRING_BASE stopped.

// State is a device's negotiated state.
type State struct {
	Features uint64       `json:"features"`
	Protocol uint64       `json:"protocol"`
	Regions  []Region     `json:"regions"`
	Queues   []QueueState `json:"queues"`
	Stats    Stats        `json:"stats"`
	// Announce is the MAC of a SEND_RARP announcement ReadTX still owes,
	// or nil.
	Announce *[6]byte `json:"announce,omitempty"`
	// Stopped has bit i set when ring i ran and GET_VRING_BASE stopped it.
	Stopped uint16 `json:"stopped,omitempty"`
	// Pairs is how many queue pairs a multi-queue front-end has set rings
	// of (0: none yet, or one pair).
	Pairs int `json:"pairs,omitempty"`
}

// QueueState is one virtqueue's state. A State has one per ring the
// device has (MaxQueues: every pair multi-queue allows, set or not).
type QueueState struct {
	Num     int    `json:"num"`
	AddrSet bool   `json:"addr_set"`
	Desc    uint64 `json:"desc"`
	Used    uint64 `json:"used"`
	Avail   uint64 `json:"avail"`
	// Flags and Log are SET_VRING_ADDR's VHOST_VRING_F_LOG and the used
	// ring's address in the dirty log.
	Flags   uint32 `json:"flags,omitempty"`
	Log     uint64 `json:"log,omitempty"`
	Base    uint16 `json:"base"`
	Started bool   `json:"started"`
	Enabled bool   `json:"enabled"`
	// The split ring's indices and what we told the guest about kicks.
	LastAvail    uint16 `json:"last_avail"`
	UsedIdx      uint16 `json:"used_idx"`
	UsedFlags    uint16 `json:"used_flags"`
	KicksAllowed bool   `json:"kicks_allowed"`
	KickAt       uint16 `json:"kick_at"`
}

// FDs are the descriptors a State stands on; -1 for a kick or call fd the
// queue has not got (NoFDs makes a set with none).
type FDs struct {
	Socket  int
	Regions []int
	Kick    [MaxQueues]int
	Call    [MaxQueues]int
}

// NoFDs is an FDs without a socket, regions, kick or call fds.
func NoFDs() FDs {
	f := FDs{Socket: -1}
	for i := range f.Kick {
		f.Kick[i], f.Call[i] = -1, -1
	}
	return f
}

// ErrMigrating is Export's refusal of a device whose guest the front-end
// is migrating (dirty logging on).
var ErrMigrating = errors.New("vhost-user: the guest is being migrated (dirty logging is on): upgrade once its migration has ended")

// ErrMidMessage is Export's refusal while a message from the front-end is
// half read: try again once it is whole.
var ErrMidMessage = errors.New("vhost-user: a message from the front-end is half read")

// keptTable is the memory table as the front-end sent it, with an fd of
// each region's file, kept open for Export (the mappings alone cannot be
// handed on). Regions of one file (QEMU gives one fd per region, often of
// the same memfd) share one kept fd: a guest costs one more fd per memory
// backend, not per region.
type keptTable struct {
	regions []Region
	fds     []int // per region; repeated for regions of one file
	owned   []int // the distinct fds, closed by close
}

// keep takes the table's fds from the message being handled.
func (k *keptTable) keep(regs []Region, c *conn) {
	fds := make([]int, len(regs))
	for i := range regs {
		fds[i] = c.take(i)
	}
	k.set(regs, fds)
}

// set keeps fds (one per region, now owned here), closing those of a
// file already kept.
func (k *keptTable) set(regs []Region, fds []int) {
	k.close()
	k.regions = append(k.regions[:0], regs...)
	type file struct{ dev, ino uint64 }
	seen := map[file]int{}
	for _, fd := range fds {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil {
			f := file{uint64(st.Dev), uint64(st.Ino)}
			if first, ok := seen[f]; ok {
				unix.Close(fd)
				k.fds = append(k.fds, first)
				continue
			}
			seen[f] = fd
		}
		k.fds = append(k.fds, fd)
		k.owned = append(k.owned, fd)
	}
}

func (k *keptTable) close() {
	for _, fd := range k.owned {
		unix.Close(fd)
	}
	k.regions, k.fds, k.owned = k.regions[:0], k.fds[:0], k.owned[:0]
}

// Export writes down the device's state. The fds stay the device's. It
// refuses while a message from the front-end is half read: try again.
func (d *Device) Export() (State, FDs, error) {
	if d.conn.have > 0 || d.conn.nfds > 0 {
		return State{}, FDs{}, ErrMidMessage
	}
	if d.features&(1<<featLogAll) != 0 || d.log.mem != nil {
		return State{}, FDs{}, ErrMigrating
	}
	st := State{Features: d.features, Protocol: d.protocol, Stats: d.stats, Stopped: d.stoppedRings,
		Pairs: d.pairs, Regions: append([]Region(nil), d.kept.regions...)}
	if d.announcePending {
		mac := d.announce
		st.Announce = &mac
	}
	fds := FDs{Socket: d.conn.fd, Regions: append([]int(nil), d.kept.fds...)}
	if len(st.Regions) != d.nmaps {
		return State{}, FDs{}, errors.New("vhost-user: the memory table is not all kept")
	}
	for i := range d.q {
		q := &d.q[i]
		st.Queues = append(st.Queues, QueueState{Num: q.num, AddrSet: q.addrSet, Desc: q.addr.desc, Used: q.addr.used,
			Avail: q.addr.avail, Flags: q.addr.flags, Log: q.addr.log, Base: q.base, Started: q.started, Enabled: q.enabled,
			LastAvail: q.vq.lastAvail, UsedIdx: q.vq.usedIdx, UsedFlags: q.vq.usedFlags,
			KicksAllowed: q.vq.kicksAllowed, KickAt: q.vq.kickAt})
		fds.Kick[i], fds.Call[i] = q.kick, q.call
	}
	return st, fds, nil
}

// Adopt is NewDevice for a device another process served and exported:
// it owns fds from here on (Close closes them), maps the memory table
// again (Config.Memory pays for it as for a SET_MEM_TABLE) and resumes the
// rings where they were. A state the protocol could not have produced is
// refused.
func Adopt(cfg Config, st State, fds FDs) (*Device, error) {
	d, err := NewDevice(fds.Socket, cfg)
	if err != nil {
		return nil, err
	}
	if err := d.adopt(&st, &fds); err != nil {
		d.Close()
		return nil, fmt.Errorf("vhost-user: adopting the device: %w", err)
	}
	// Held by the process before under the same budget: counted, never
	// refused (a guest that did nothing would lose its network).
	_ = d.tellFds()
	return d, nil
}

// Recover is Adopt for a state written down before the device's last
// moves, kept while it ran (vknetd --supervise) and taken up after the
// process that served it died: its ring indices are not current, so each
// running ring goes on from the used idx in guest memory instead
// (virtq.resumeFromUsed), and every ring with a call fd is called once,
// since the dead process may have published used entries and died before
// telling the guest, which would then wait for a call that never comes.
// A used idx that cannot be right refuses the device (ErrViolation), as
// any state the protocol could not have produced. On an error the fds are
// closed.
func Recover(cfg Config, st State, fds FDs) (*Device, error) {
	d, err := NewDevice(fds.Socket, cfg)
	if err != nil {
		closeFDs(&fds)
		return nil, err
	}
	err = d.adopt(&st, &fds)
	if err == nil {
		err = d.resumeFromUsed()
	}
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("vhost-user: recovering the device: %w", err)
	}
	_ = d.tellFds() // as Adopt
	return d, nil
}

// resumeFromUsed moves every running ring to its used idx and calls the
// guest on each.
func (d *Device) resumeFromUsed() (err error) {
	// The first touch of guest memory since it was mapped, and on the
	// caller's goroutine, not a loop's: a front-end that shrank its
	// memory file meanwhile must refuse this device, not kill the daemon
	// (whose successor would meet the same file).
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverFault(&err)
	for i := range d.q {
		q := &d.q[i]
		if !q.started {
			continue
		}
		if err := q.vq.resumeFromUsed(); err != nil {
			return err
		}
	}
	for i := range d.q {
		if d.q[i].started {
			d.call(&d.q[i])
		}
	}
	return nil
}

// closeFDs closes every fd of f, for a device that never owned them.
func closeFDs(f *FDs) {
	fds := append([]int{f.Socket}, f.Regions...)
	fds = append(fds, f.Kick[:]...)
	fds = append(fds, f.Call[:]...)
	seen := map[int]bool{}
	for _, fd := range fds {
		if fd >= 0 && !seen[fd] {
			seen[fd] = true
			unix.Close(fd)
		}
	}
}

func (d *Device) adopt(st *State, fds *FDs) error {
	// Whatever fails, the device owns every fd now and Close closes it.
	d.kept.set(st.Regions, append([]int(nil), fds.Regions...))
	for i := range d.q {
		d.q[i].kick, d.q[i].call = fds.Kick[i], fds.Call[i]
	}
	if extra := st.Features &^ offeredFeatures(d.cfg.Offloads); extra != 0 {
		why := "is this vknetd older than the one that handed the guest over?"
		if extra&^offloadFeatures == 0 {
			why = "offloads are off here: is --no-offload new?"
		}
		return fmt.Errorf("the guest's features %#x are not offered here (%s)", extra, why)
	}
	if extra := st.Protocol &^ offeredProtocolFeatures; extra != 0 {
		return fmt.Errorf("protocol features %#x are not offered here", extra)
	}
	// One pair at least, whole pairs, at most MaxQueues: a daemon without
	// multi-queue wrote one pair.
	if n := len(st.Queues); n < numQueues || n > MaxQueues || n%2 != 0 {
		return fmt.Errorf("%d queues", n)
	}
	if st.Stopped>>len(st.Queues) != 0 {
		return fmt.Errorf("stopped rings %#x of %d", st.Stopped, len(st.Queues))
	}
	if st.Pairs < 0 || 2*st.Pairs > len(st.Queues) {
		return fmt.Errorf("%d queue pairs of %d rings", st.Pairs, len(st.Queues))
	}
	if st.Pairs > 1 && st.Protocol&(1<<protoFeatMQ) == 0 {
		return fmt.Errorf("%d queue pairs without the multi-queue protocol feature", st.Pairs)
	}
	if st.Features&(1<<featLogAll) != 0 {
		return ErrMigrating // Export never writes such a state
	}
	d.features, d.protocol, d.stats, d.stoppedRings, d.pairs = st.Features, st.Protocol, st.Stats, st.Stopped, st.Pairs
	if m := st.Announce; m != nil {
		if m[0]&1 != 0 || *m == [6]byte{} {
			return fmt.Errorf("RARP announcement for %x, not a unicast MAC", *m)
		}
		if d.protocol&(1<<protoFeatRARP) == 0 {
			return errors.New("a RARP announcement without the RARP protocol feature")
		}
		d.announce, d.announcePending = *m, true
	}
	if len(st.Regions) != len(fds.Regions) || len(st.Regions) > maxRegions {
		return fmt.Errorf("%d regions with %d fds", len(st.Regions), len(fds.Regions))
	}
	if n := len(st.Regions); n > 0 {
		if err := validateRegions(st.Regions); err != nil {
			return err
		}
		var plan [maxRegions]regionMapping
		var total uint64
		for i, r := range st.Regions {
			var err error
			if plan[i], err = planRegion(i, r, d.kept.fds[i]); err != nil {
				return err
			}
			total += plan[i].length
		}
		if d.cfg.Memory != nil {
			if err := d.cfg.Memory(total); err != nil {
				return err
			}
			d.charged = total // releaseMemory tells Config.Memory of it at Close
		}
		d.memBytes = total
		for i, r := range st.Regions {
			mapping, view, err := mapRegion(i, r, d.kept.fds[i], plan[i])
			if err != nil {
				return err
			}
			d.maps[i], d.nmaps = mapping, i+1
			d.mem.add(r, view)
		}
	}
	eventIdx := d.features&(1<<featRingEventIdx) != 0
	for i := range st.Queues {
		qs, q := &st.Queues[i], &d.q[i]
		if qs.Num != 0 && (qs.Num > maxQueueSize || qs.Num&(qs.Num-1) != 0) {
			return fmt.Errorf("queue %d size %d", i, qs.Num)
		}
		for _, fd := range []int{q.kick, q.call} {
			if fd >= 0 {
				if err := unix.SetNonblock(fd, true); err != nil {
					return fmt.Errorf("queue %d eventfd: %w", i, err)
				}
			}
		}
		if qs.Flags&^vringFLog != 0 {
			return fmt.Errorf("queue %d address flags %#x", i, qs.Flags)
		}
		q.num, q.addrSet, q.base, q.enabled = qs.Num, qs.AddrSet, qs.Base, qs.Enabled
		q.addr = vringAddr{index: uint32(i), flags: qs.Flags, desc: qs.Desc, used: qs.Used, avail: qs.Avail, log: qs.Log}
		if !qs.Started {
			continue
		}
		if q.kick < 0 {
			return fmt.Errorf("queue %d started without a kick fd", i)
		}
		q.vq.reset(qs.Num, qs.Base, eventIdx)
		if err := d.mapRings(i); err != nil {
			return err
		}
		q.vq.lastAvail, q.vq.usedIdx, q.vq.usedFlags = qs.LastAvail, qs.UsedIdx, qs.UsedFlags
		q.vq.kicksAllowed, q.vq.kickAt = qs.KicksAllowed, qs.KickAt
		q.started = true
	}
	return nil
}
