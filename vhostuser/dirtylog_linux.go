package vhostuser

import "golang.org/x/sys/unix"

// vringFLog is SET_VRING_ADDR's flag asking for the used ring's writes
// to be logged (VHOST_VRING_F_LOG), at the message's log address.
const vringFLog = 1 << 0

// setLogBase maps the dirty log a front-end gives before it migrates the
// guest (SET_LOG_BASE with LOG_SHMFD) and replies, as QEMU waits for the
// reply. Everything is checked before anything is mapped: the fd must be
// a regular file (memfd, tmpfs, hugetlbfs) holding offset+size bytes, the
// log must cover the memory table and the logged used rings, and the
// mapping is charged to Config.Memory with the memory table. A new log
// replaces the old one; a refused log closes the guest, with the old one
// still counted until Close.
func (d *Device) setLogBase(h header, p []byte) error {
	if d.protocol&(1<<protoFeatLogShmfd) == 0 {
		return violation("%v: LOG_SHMFD was not negotiated; only a log in shared memory is supported", h.req)
	}
	lb, err := payloadLog(h, p)
	if err != nil {
		return err
	}
	if d.conn.nfds != 1 {
		return violation("%v: %d fds came, want 1 (the log's memory)", h.req, d.conn.nfds)
	}
	switch {
	case lb.size == 0:
		return violation("%v: log of 0 bytes", h.req)
	case lb.size > maxLogSize:
		return violation("%v: log of %#x bytes, more than %#x (which covers 128 TiB of guest memory)", h.req, lb.size, uint64(maxLogSize))
	case lb.offset > maxRegionSize:
		return violation("%v: log offset %#x is over %#x", h.req, lb.offset, uint64(maxRegionSize))
	}
	if err := d.logCovers(h, lb.size); err != nil {
		return err
	}
	fd := d.conn.fds[0]
	plan, err := planLog(h, lb, fd)
	if err != nil {
		return err
	}
	if d.cfg.Memory != nil {
		if err := d.cfg.Memory(d.memBytes + plan.length); err != nil {
			return violation("%v: log refused: %v", h.req, err)
		}
		d.charged = d.memBytes + plan.length
	}
	b, err := unix.Mmap(fd, int64(plan.start), int(plan.length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return violation("%v: mmap of the log, %#x bytes at offset %#x: %v", h.req, plan.length, plan.start, err)
	}
	d.unmapLog()
	d.log = dirtyLog{mem: b, off: plan.delta, size: lb.size}
	d.logBytes = plan.length
	if err := d.applyLog(h); err != nil {
		return err
	}
	var r [8]byte // 0: mapped
	return d.conn.reply(h, r[:])
}

// planLog checks the log's fd and works out its mapping: whole pages
// around [offset, offset+size), as mmap wants its offset page-aligned.
func planLog(h header, lb logBase, fd int) (regionMapping, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return regionMapping{}, violation("%v: fstat of the log's fd: %v", h.req, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return regionMapping{}, violation("%v: the log's fd is not a regular file (mode %#o), not shared memory", h.req, st.Mode)
	}
	if st.Size < 0 || uint64(st.Size) < lb.offset+lb.size {
		return regionMapping{}, violation("%v: the log's file of %d bytes is shorter than offset %#x + size %#x", h.req, st.Size, lb.offset, lb.size)
	}
	page := uint64(unix.Getpagesize())
	start := lb.offset &^ (page - 1)
	delta := lb.offset - start
	return regionMapping{start: start, delta: delta, length: (delta + lb.size + page - 1) &^ (page - 1)}, nil
}

// logCovers checks that a log of size bytes has a bit for every page of
// the memory table and of each used ring logged at its log address.
func (d *Device) logCovers(h header, size uint64) error {
	l := dirtyLog{size: size}
	for i := 0; i < d.mem.n; i++ {
		r := &d.mem.r[i]
		if end := r.guest + r.size; !l.covers(end) {
			return violation("%v: a log of %#x bytes covers guest memory up to %#x; memory region %d ends at %#x",
				h.req, size, size*8*logPageSize, i, end)
		}
	}
	for i := range d.q {
		q := &d.q[i]
		if q.addr.flags&vringFLog == 0 || q.num == 0 {
			continue
		}
		end := q.addr.log + usedRingSize(q.num)
		if end < q.addr.log || !l.covers(end) {
			return violation("%v: queue %d's used ring is logged at %#x+%#x, past what a log of %#x bytes covers",
				h.req, i, q.addr.log, usedRingSize(q.num), size)
		}
	}
	return nil
}

// applyLog turns logging on or off in the rings after a message that
// may change it: on while LOG_ALL is negotiated and a log is mapped,
// checked then to cover what will be marked. LOG_ALL before the log
// (QEMU sets the features and ring addresses first when it starts a
// device while migrating, the log right after) logs nothing yet: there
// is nowhere to log to.
func (d *Device) applyLog(h header) error {
	on := d.features&(1<<featLogAll) != 0 && d.log.mem != nil
	if on {
		if err := d.logCovers(h, d.log.size); err != nil {
			return err
		}
	}
	for i := range d.q {
		q := &d.q[i]
		vq := &q.vq
		vq.log, vq.logUsedRing, vq.usedLogAddr = nil, false, 0
		if on {
			vq.log = &d.log
			if q.addr.flags&vringFLog != 0 {
				vq.logUsedRing, vq.usedLogAddr = true, q.addr.log
			}
		}
	}
	return nil
}

func (d *Device) unmapLog() {
	for i := range d.q {
		d.q[i].vq.log, d.q[i].vq.logUsedRing = nil, false
	}
	if d.log.mem != nil {
		unmap(d.log.mem)
	}
	d.log = dirtyLog{}
	d.logBytes = 0
}

// sendRARP takes SEND_RARP: the front-end asks us to announce the guest's
// MAC, the first 6 bytes of the payload, on the guest's behalf (QEMU does
// when the guest cannot announce itself after a migration). The
// announcement goes out as the next frame ReadTX returns, as if the guest
// had sent it: the switch learns the MAC on this port and floods it.
func (d *Device) sendRARP(h header, p []byte) (Changes, error) {
	if d.protocol&(1<<protoFeatRARP) == 0 {
		return 0, violation("%v: RARP was not negotiated", h.req)
	}
	if _, err := payloadU64(h, p); err != nil {
		return 0, err
	}
	var mac [6]byte
	copy(mac[:], p[:6])
	if mac[0]&1 != 0 || mac == [6]byte{} {
		return 0, violation("%v: %02x is not a unicast MAC", h.req, mac[:])
	}
	d.announce, d.announcePending = mac, true
	// The engine reads TX once on a state change; the TX ring need not
	// be kicked for the announcement to go out.
	return StateChanged, nil
}
