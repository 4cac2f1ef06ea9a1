package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
)

// Changes says what a call to HandleSocket changed that the engine's
// poller or scheduler must follow.
type Changes uint8

const (
	// KickChanged: a queue's kick fd was set, replaced or closed. Re-read
	// KickFD for both queues and re-register them; the old numbers are
	// closed already (and may be reused by the new ones).
	KickChanged Changes = 1 << iota
	// StateChanged: a queue started, stopped, was enabled or disabled,
	// the memory table changed, or the front-end asked for the guest to
	// be announced (SEND_RARP). Check Ready; a TX ring that just started
	// may hold frames from before a reconnect, and an announcement is
	// ReadTX's next frame, so read it once without waiting for a kick.
	StateChanged
	// ExportChanged: what Export writes down changed (features, the
	// memory table, a ring's size, base, addresses, kick or call fd, its
	// enabling, a stop, a reset, an announcement): a copy kept for crash
	// recovery (Recover) is out of date.
	ExportChanged
)

// Config tunes a Device.
type Config struct {
	// Note receives one line for each request the device ignored
	// (unknown, no reply expected). Nil discards them.
	Note func(msg string)

	// Offloads offers the guest checksum and TSO offloads both ways (CSUM,
	// GUEST_CSUM, HOST_TSO4/6, GUEST_TSO4/6, HOST_ECN, GUEST_ECN): ReadTX
	// then hands out each frame's virtio_net_hdr, and WriteRX writes the
	// one it is given. The caller must carry frames of up to
	// gso.MaxFrameLen bytes, or give Large.
	Offloads bool

	// Large, with Offloads, is asked for a buffer when a guest frame does
	// not fit bufs[slot] of ReadTX: one of at least gso.MaxFrameLen bytes
	// that replaces bufs[slot] (what was copied moves over), or nil when
	// none is free: ReadTX then stops before that frame, which stays in
	// the ring for a later call (more), as a socket's frame waits in the
	// kernel for a buffer to read it into.
	Large func(slot int) []byte

	// Memory, when set, is who pays for the guest memory the device maps.
	// Before mapping a memory table the device calls it with the bytes
	// the new table's mappings take in all (each region's mapping length,
	// rounded up to the file's block size as mapped), which replace what
	// it held until then; it calls it with 0 when it lets go of its
	// mappings (Close, or a table that failed to map). An error refuses
	// the table before anything is mapped: the device closes with a
	// violation carrying the error, which should say what to raise. A
	// call that does not grow what the device holds must not fail.
	Memory func(bytes uint64) error

	// Fds, when set, is who allows the file descriptors the device holds
	// (its socket, every ring's kick and call, the memory table's files,
	// a message's fds while it is read): it is told their number each
	// time it may have grown (fds came, a message was handled, the device
	// was adopted) and 0 when the device closes. An error refuses the
	// growth: the device closes with a violation carrying it. The kernel
	// has handed a message's fds over before anyone can be asked, so the
	// caller leaves one message's worth (8) of room for each goroutine
	// serving devices at once.
	Fds func(held int) error
}

// Device is one guest's virtio-net device behind one vhost-user
// connection. It is not safe for concurrent use: the engine's loop owns
// it.
type Device struct {
	conn *conn
	cfg  Config

	features uint64 // acked by SET_FEATURES
	protocol uint64 // acked by SET_PROTOCOL_FEATURES

	mem      memory
	maps     [maxRegions][]byte // whole mappings, for munmap
	nmaps    int
	memBytes uint64    // the table's mapping lengths
	logBytes uint64    // the dirty log's mapping length
	charged  uint64    // what Config.Memory was last told: memBytes+logBytes once settled
	fdsTold  int       // what Config.Fds was last told
	kept     keptTable // the table and its fds, for Export (state.go)

	log dirtyLog // SET_LOG_BASE's; mem nil without one

	announce        [6]byte // SEND_RARP's MAC
	announcePending bool    // ReadTX owes the RARP announcing it
	stoppedRings    uint16  // bit i: ring i ran, then GET_VRING_BASE stopped it

	q [MaxQueues]queue
	// pairs is how many queue pairs the front-end has set a ring of up
	// (1 + the highest pair it named), so the data path looks no
	// further.
	pairs int

	// split is SplitTX's head length (0: off); splitOver the length past
	// which a frame in one descriptor is split.
	split, splitOver int

	// Queues is the device's own data path: every pair's, but those
	// handed to another Queues (Serve) until they come back (Rejoin).
	Queues

	one [8]byte // 1, written to a call eventfd
}

// queue is what the front-end told us about one virtqueue, and the ring
// itself once started.
type queue struct {
	vq      virtq
	num     int // SET_VRING_NUM; 0 until then
	addr    vringAddr
	addrSet bool
	base    uint16 // SET_VRING_BASE: first avail entry to take when started
	kick    int    // eventfd the guest kicks; -1 none
	call    int    // eventfd we call; -1 none (the guest polls)
	started bool   // kick fd received and rings mapped; until GET_VRING_BASE
	enabled bool   // SET_VRING_ENABLE 1, or always without PROTOCOL_FEATURES
}

// NewDevice serves a vhost-user front-end on sock, a connected unix stream
// socket the Device now owns (it is made non-blocking and closed by Close).
func NewDevice(sock int, cfg Config) (*Device, error) {
	if err := unix.SetNonblock(sock, true); err != nil {
		return nil, fmt.Errorf("vhost-user: making socket %d non-blocking: %w", sock, err)
	}
	d := &Device{conn: newConn(sock), cfg: cfg}
	d.Queues = Queues{dev: d, own: allPairs, large: cfg.Large}
	binary.LittleEndian.PutUint64(d.one[:], 1)
	for i := range d.q {
		d.q[i] = queue{vq: virtq{index: i}, kick: -1, call: -1}
	}
	return d, nil
}

// SocketFD is the connection to poll for readability.
func (d *Device) SocketFD() int { return d.conn.fd }

// KickFD is queue q's kick eventfd to poll for readability, -1 if none;
// q is below MaxQueues (even: an RX ring, odd: a TX ring).
func (d *Device) KickFD(q int) int { return d.q[q].kick }

// Ready says whether frames can flow both ways: memory mapped, the first
// pair's rings started and enabled (a multi-queue guest's other pairs
// come and go with the vCPUs it uses).
func (d *Device) Ready() bool {
	return d.q[RXQ].started && d.q[RXQ].enabled && d.q[TXQ].started && d.q[TXQ].enabled
}

// Stopped says the front-end stopped a ring that had run (GET_VRING_BASE)
// and has not started it again: QEMU does so when the guest migrates away
// or its card stops. The guest is no longer reached through this device.
func (d *Device) Stopped() bool { return d.stoppedRings != 0 }

// Stats returns the device's counters: its own data path's, with those of
// the Queues that served some of its pairs and were rejoined (Rejoin); a
// Queues still serving counts apart (Queues.Stats).
func (d *Device) Stats() Stats { return d.stats }

// Offloads is what the guest accepted to receive whole (GUEST_CSUM,
// GUEST_TSO4/6, GUEST_ECN); 0 without Config.Offloads or before the
// front-end set its features. A guest with GUEST_TSO and without
// MRG_RXBUF posts buffers big enough for a superframe (Linux does); a
// frame its buffers cannot hold is dropped (Stats.RXOversize).
func (d *Device) Offloads() gso.Offloads { return guestOffloads(d.features, true) }

// HandleSocket processes every message the socket holds now and returns
// what changed. Call it when the socket is readable. An error matching
// ErrViolation or ErrHangup (or any other) means the device is done:
// Close it. A violation has been told to the front-end already, in a
// refusal note (RefusalRequest) carrying the error's text.
func (d *Device) HandleSocket() (ch Changes, err error) {
	defer func() {
		if errors.Is(err, ErrViolation) {
			Refuse(d.conn.fd, err.Error())
		}
	}()
	// Starting a ring writes into guest memory (kick suppression fields).
	defer recoverFault(&err)
	if d.rxOpen != 0 {
		d.FlushRX() // before a message changes the rings or the memory
	}
	for {
		ok, err := d.conn.read()
		if err != nil {
			d.conn.done()
			return ch, err
		}
		if !ok {
			// The rest of a message comes with the next call; its fds,
			// if they came, are held until then.
			return ch, d.tellFds()
		}
		c, err := d.handle(d.conn.hdr, d.conn.payload())
		d.conn.done()
		ch |= c
		if err == nil {
			err = d.tellFds()
		}
		if err != nil {
			return ch, err
		}
	}
}

// heldFds counts the file descriptors the device holds: its socket, each
// ring's kick and call, the memory table's files and the fds of the
// message being read. At most MaxDeviceFds.
func (d *Device) heldFds() int {
	n := len(d.kept.owned)
	if !d.conn.closed {
		n++
	}
	for i := range d.q {
		if d.q[i].kick >= 0 {
			n++
		}
		if d.q[i].call >= 0 {
			n++
		}
	}
	for _, fd := range d.conn.fds[:d.conn.nfds] {
		if fd >= 0 {
			n++
		}
	}
	return n
}

// tellFds tells Config.Fds what the device holds now, when it changed; a
// refused growth is a violation (the device closes).
func (d *Device) tellFds() error {
	n := d.heldFds()
	if d.cfg.Fds == nil || n == d.fdsTold {
		return nil
	}
	grew := n > d.fdsTold
	d.fdsTold = n
	if err := d.cfg.Fds(n); err != nil && grew {
		return violation("holding %d file descriptors refused: %v", n, err)
	}
	return nil
}

// handle processes one message; the conn's fds not taken are closed after.
func (d *Device) handle(h header, p []byte) (Changes, error) {
	nfds := d.conn.nfds
	wantFDs := 0
	var ch Changes
	var err error
	replied := false
	switch h.req {
	case reqGetFeatures:
		err, replied = d.replyU64(h, offeredFeatures(d.cfg.Offloads)), true
	case reqSetFeatures:
		var v uint64
		if v, err = payloadU64(h, p); err == nil {
			if extra := v &^ offeredFeatures(d.cfg.Offloads); extra != 0 {
				err = violation("%v: features %#x were not offered (offered %#x)", h.req, extra, offeredFeatures(d.cfg.Offloads))
			}
			d.features = v
			if err == nil {
				err = d.applyLog(h) // LOG_ALL turns logging on and off
			}
		}
	case reqSetLogBase:
		wantFDs = -1 // checked: exactly one
		err, replied = d.setLogBase(h, p), true
	case reqSendRARP:
		ch, err = d.sendRARP(h, p)
	case reqGetProtocolFeatures:
		err, replied = d.replyU64(h, offeredProtocolFeatures), true
	case reqSetProtocolFeatures:
		var v uint64
		if v, err = payloadU64(h, p); err == nil {
			if extra := v &^ offeredProtocolFeatures; extra != 0 {
				err = violation("%v: protocol features %#x were not offered (offered %#x)", h.req, extra, uint64(offeredProtocolFeatures))
			}
			d.protocol = v
		}
	case reqGetQueueNum:
		err, replied = d.replyU64(h, MaxQueuePairs), true // queue pairs
	case reqSetOwner:
	case reqResetOwner, reqResetDevice:
		ch = d.reset()
	case reqSetMemTable:
		wantFDs = -1 // checked against the region count
		if ch, err = d.setMemTable(h, p); err == nil {
			err = d.applyLog(h) // a logged table must stay covered
		}
	case reqSetVringNum, reqSetVringBase, reqSetVringEnable:
		if ch, err = d.setVringState(h, p); err == nil && h.req == reqSetVringNum {
			err = d.applyLog(h) // a logged used ring's size changed
		}
	case reqSetVringAddr:
		err = d.setVringAddr(h, p)
	case reqGetVringBase:
		ch, err = d.getVringBase(h, p)
		replied = true
	case reqSetVringKick, reqSetVringCall, reqSetVringErr:
		wantFDs = -1
		ch, err = d.setVringFD(h, p)
	default:
		if h.needReply() || h.req.alwaysReplies() {
			return 0, violation("%v: not supported, and the front-end expects a reply", h.req)
		}
		if d.cfg.Note != nil {
			d.cfg.Note(fmt.Sprintf("vhost-user: ignored %v (%d bytes, %d fds)", h.req, len(p), nfds))
		}
		return 0, nil
	}
	if err == nil && wantFDs == 0 && nfds != 0 {
		err = violation("%v: came with %d fds, takes none", h.req, nfds)
	}
	if err != nil {
		return ch, err
	}
	switch h.req {
	case reqGetFeatures, reqGetProtocolFeatures, reqGetQueueNum, reqSetOwner, reqSetVringErr:
		// Questions, and what Export does not carry.
	default:
		ch |= ExportChanged
	}
	if !replied && h.needReply() && d.protocol&(1<<protoFeatReplyAck) != 0 {
		return ch, d.replyU64(h, 0) // success; failures close the connection instead
	}
	return ch, nil
}

func (d *Device) replyU64(h header, v uint64) error {
	var p [8]byte
	binary.LittleEndian.PutUint64(p[:], v)
	return d.conn.reply(h, p[:])
}

// queueIndex checks a ring index from a message: past the first pair
// only with MQ negotiated, and never past MaxQueuePairs pairs.
func (d *Device) queueIndex(h header, i uint32) (int, error) {
	switch {
	case i >= MaxQueues:
		return 0, violation("%v: queue %d, this device has at most %d (%d RX/TX pairs)", h.req, i, MaxQueues, MaxQueuePairs)
	case i >= numQueues && d.protocol&(1<<protoFeatMQ) == 0:
		return 0, violation("%v: queue %d without VHOST_USER_PROTOCOL_F_MQ negotiated: one RX/TX pair", h.req, i)
	}
	d.pairs = max(d.pairs, int(i)/2+1)
	return int(i), nil
}

func (d *Device) setVringState(h header, p []byte) (Changes, error) {
	s, err := payloadState(h, p)
	if err != nil {
		return 0, err
	}
	i, err := d.queueIndex(h, s.index)
	if err != nil {
		return 0, err
	}
	q := &d.q[i]
	switch h.req {
	case reqSetVringNum:
		if q.started {
			return 0, violation("%v: queue %d is running", h.req, i)
		}
		if s.num == 0 || s.num > maxQueueSize || s.num&(s.num-1) != 0 {
			return 0, violation("%v: queue %d size %d is not a power of 2 up to %d", h.req, i, s.num, maxQueueSize)
		}
		q.num = int(s.num)
	case reqSetVringBase:
		if q.started {
			return 0, violation("%v: queue %d is running", h.req, i)
		}
		if s.num > 0xffff {
			return 0, violation("%v: queue %d base %d does not fit a split ring index", h.req, i, s.num)
		}
		q.base = uint16(s.num)
	case reqSetVringEnable:
		if s.num > 1 {
			return 0, violation("%v: queue %d: %d is neither 0 nor 1", h.req, i, s.num)
		}
		q.enabled = s.num == 1
		return StateChanged, nil
	}
	return 0, nil
}

func (d *Device) setVringAddr(h header, p []byte) error {
	a, err := payloadAddr(h, p)
	if err != nil {
		return err
	}
	i, err := d.queueIndex(h, a.index)
	if err != nil {
		return err
	}
	if a.flags&^vringFLog != 0 {
		return violation("%v: queue %d flags %#x: only VHOST_VRING_F_LOG (1) is known", h.req, i, a.flags)
	}
	q := &d.q[i]
	q.addr, q.addrSet = a, true
	if q.started {
		if err := d.mapRings(i); err != nil {
			return err
		}
	}
	return d.applyLog(h) // the used ring's logging follows the flag
}

// mapRings translates queue i's ring addresses into views of our mappings
// and installs them. Each ring must lie whole in one region.
func (d *Device) mapRings(i int) error {
	q := &d.q[i]
	switch {
	case q.num == 0:
		return violation("queue %d started before SET_VRING_NUM", i)
	case !q.addrSet:
		return violation("queue %d started before SET_VRING_ADDR", i)
	case d.mem.n == 0:
		return violation("queue %d started before SET_MEM_TABLE", i)
	}
	desc := d.mem.user(q.addr.desc, descTableSize(q.num))
	avail := d.mem.user(q.addr.avail, availRingSize(q.num))
	used := d.mem.user(q.addr.used, usedRingSize(q.num))
	switch {
	case desc == nil:
		return violation("queue %d: descriptor table %#x+%#x is not inside one memory region", i, q.addr.desc, descTableSize(q.num))
	case avail == nil:
		return violation("queue %d: avail ring %#x+%#x is not inside one memory region", i, q.addr.avail, availRingSize(q.num))
	case used == nil:
		return violation("queue %d: used ring %#x+%#x is not inside one memory region", i, q.addr.used, usedRingSize(q.num))
	}
	return q.vq.setRings(desc, avail, used)
}

// startRing starts queue i on its first kick fd.
func (d *Device) startRing(i int) error {
	q := &d.q[i]
	q.vq.reset(q.num, q.base, d.features&(1<<featRingEventIdx) != 0)
	if err := d.mapRings(i); err != nil {
		return err
	}
	q.started = true
	d.stoppedRings &^= 1 << i
	if d.features&(1<<featProtocolFeatures) == 0 {
		q.enabled = true // no SET_VRING_ENABLE will come
	}
	q.vq.allowKicks(q.vq.lastAvail)
	return nil
}

// stopRing stops queue i and remembers where it stopped.
func (d *Device) stopRing(i int) {
	q := &d.q[i]
	if q.started {
		q.base = q.vq.lastAvail
		d.stoppedRings |= 1 << i
	}
	q.started, q.enabled = false, false
	q.vq.desc, q.vq.avail, q.vq.used = nil, nil, nil
	closeFD(&q.kick)
}

func (d *Device) getVringBase(h header, p []byte) (Changes, error) {
	s, err := payloadState(h, p)
	if err != nil {
		return 0, err
	}
	i, err := d.queueIndex(h, s.index)
	if err != nil {
		return 0, err
	}
	d.stopRing(i)
	var r [8]byte
	binary.LittleEndian.PutUint32(r[0:], uint32(i))
	binary.LittleEndian.PutUint32(r[4:], uint32(d.q[i].base))
	return KickChanged | StateChanged, d.conn.reply(h, r[:])
}

func (d *Device) setVringFD(h header, p []byte) (Changes, error) {
	v, err := payloadU64(h, p)
	if err != nil {
		return 0, err
	}
	if v&^(vringIndexMask|vringNoFD) != 0 {
		return 0, violation("%v: payload %#x has unknown bits", h.req, v)
	}
	i, err := d.queueIndex(h, uint32(v&vringIndexMask))
	if err != nil {
		return 0, err
	}
	noFD := v&vringNoFD != 0
	switch {
	case noFD && d.conn.nfds != 0:
		return 0, violation("%v: queue %d: no-fd flag set, yet %d fds came", h.req, i, d.conn.nfds)
	case !noFD && d.conn.nfds != 1:
		return 0, violation("%v: queue %d: %d fds came, want 1", h.req, i, d.conn.nfds)
	}
	q := &d.q[i]
	switch h.req {
	case reqSetVringKick:
		if noFD {
			return 0, violation("%v: queue %d: polling without a kick fd is not supported", h.req, i)
		}
		fd := d.conn.take(0)
		if err := checkEventfd(h, i, "kick", fd); err != nil {
			unix.Close(fd)
			return 0, err
		}
		// Our loop must never block on a descriptor the front-end chose.
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			return 0, violation("%v: queue %d: kick fd: %v", h.req, i, err)
		}
		closeFD(&q.kick)
		q.kick = fd
		if !q.started {
			if err := d.startRing(i); err != nil {
				return KickChanged, err
			}
		}
		return KickChanged | StateChanged, nil
	case reqSetVringCall:
		closeFD(&q.call)
		if !noFD {
			q.call = d.conn.take(0)
			// Not a kick's reason (we never read it), but a call fd that
			// is not an eventfd can block, fill or go to anyone.
			if err := checkEventfd(h, i, "call", q.call); err != nil {
				return 0, err
			}
			if err := unix.SetNonblock(q.call, true); err != nil {
				return 0, violation("%v: queue %d: call fd: %v", h.req, i, err)
			}
		}
	case reqSetVringErr:
		// We never report ring errors through it: the fd is closed when
		// the message is done, and errors close the connection instead.
	}
	return 0, nil
}

// setMemTable maps a new memory table, then drops the old one and moves
// running rings onto the new mappings. The new table's mappings are
// checked against Config.Memory before any is made, replacing the old
// table's share; a table that fails to map half way leaves the device with
// no memory at all, and closing.
func (d *Device) setMemTable(h header, p []byte) (Changes, error) {
	var regs [maxRegions]Region
	n, err := payloadMemTable(h, p, &regs)
	if err != nil {
		return 0, err
	}
	if d.conn.nfds != n {
		return 0, violation("%v: %d regions, %d fds", h.req, n, d.conn.nfds)
	}
	if err := validateRegions(regs[:n]); err != nil {
		return 0, err
	}
	var plan [maxRegions]regionMapping
	var total uint64 // at most 8 regions of 1 TiB and a block each: no overflow
	for i := range n {
		if plan[i], err = planRegion(i, regs[i], d.conn.fds[i]); err != nil {
			return 0, err
		}
		total += plan[i].length
	}
	if d.cfg.Memory != nil {
		// With a dirty log mapped, it is held beside the table.
		if err := d.cfg.Memory(total + d.logBytes); err != nil {
			return 0, violation("%v: memory table refused: %v", h.req, err)
		}
		d.charged = total + d.logBytes
	}
	d.memBytes = total
	var mem memory
	var maps [maxRegions][]byte
	for i := range n {
		mapping, view, err := mapRegion(i, regs[i], d.conn.fds[i], plan[i])
		if err != nil {
			for _, m := range maps[:i] {
				unmap(m)
			}
			// The old table was given up for this one, which failed:
			// the device is done, and holds nothing any more.
			d.unmapAll()
			d.releaseMemory()
			return StateChanged, err
		}
		maps[i] = mapping
		mem.add(regs[i], view)
	}
	// The fds are closed when the message is done: the mappings keep the
	// files alive.
	d.unmapAll()
	d.mem, d.maps, d.nmaps = mem, maps, n
	d.kept.keep(regs[:n], d.conn)
	for i := range d.q {
		if d.q[i].started {
			if err := d.mapRings(i); err != nil {
				return StateChanged, err
			}
		}
	}
	return StateChanged, nil
}

func (d *Device) unmapAll() {
	for i := range d.q {
		d.q[i].vq.desc, d.q[i].vq.avail, d.q[i].vq.used = nil, nil, nil
	}
	for i := 0; i < d.nmaps; i++ {
		unmap(d.maps[i])
		d.maps[i] = nil
	}
	d.nmaps = 0
	d.mem = memory{}
	d.kept.close()
}

// releaseMemory tells Config.Memory that the device holds no memory table
// any more, only its dirty log if it still has one; letting go never
// fails.
func (d *Device) releaseMemory() {
	d.memBytes = 0
	if d.charged != d.logBytes && d.cfg.Memory != nil {
		_ = d.cfg.Memory(d.logBytes)
	}
	d.charged = d.logBytes
}

// reset forgets the rings and the negotiated features, as on a fresh
// connection; the memory table stays until replaced or closed.
func (d *Device) reset() Changes {
	for i := range d.q {
		d.stopRing(i)
		closeFD(&d.q[i].call)
		d.q[i] = queue{vq: virtq{index: i}, kick: -1, call: -1}
	}
	d.features, d.protocol = 0, 0
	d.pairs, d.nextTX = 0, 0
	return KickChanged | StateChanged
}

func closeFD(fd *int) {
	if *fd >= 0 {
		unix.Close(*fd)
		*fd = -1
	}
}

// Close releases everything: the socket, the eventfds, the mappings.
func (d *Device) Close() error {
	d.reset()
	d.unmapAll()
	d.unmapLog()
	d.releaseMemory()
	err := d.conn.close()
	if d.cfg.Fds != nil && d.fdsTold != 0 {
		d.fdsTold = 0
		_ = d.cfg.Fds(0)
	}
	return err
}
