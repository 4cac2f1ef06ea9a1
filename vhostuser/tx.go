package vhostuser

// readBatch takes frames from a TX ring into bufs[i][offset:], stripping
// the hdrLen-byte virtio-net header, and records their lengths in sizes.
// Every chain it takes is returned to the guest as used before it returns,
// so no guest buffer outlives the call.
//
// more says the ring may hold frames we did not take, and that the guest
// was asked not to kick: call again. With more false the ring was seen
// empty after kicks were allowed again, so the next frame will kick.
// call says the guest wants to be told about the used entries.
func (q *virtq) readBatch(m *memory, hdrLen int, bufs [][]byte, sizes []int, offset int, st *Stats) (n int, more, call bool, err error) {
	old := q.usedIdx
	taken := 0 // used entries written and not yet published
	for {
		avail, err := q.pending()
		if err != nil {
			return n, false, false, err
		}
		if avail == 0 && !q.kicksAllowed {
			q.allowKicks()
			if avail, err = q.pending(); err != nil {
				return n, false, false, err
			}
		}
		if avail == 0 {
			break
		}
		if n == len(bufs) || taken == q.num {
			more = true
			break
		}
		if q.kicksAllowed {
			q.stopKicks()
		}
		for ; avail > 0 && n < len(bufs) && taken < q.num; avail-- {
			h, err := q.head(0)
			if err != nil {
				return n, false, false, err
			}
			dst := bufs[n][offset:]
			size, err := q.readFrame(m, h, hdrLen, dst)
			if err != nil {
				return n, false, false, err
			}
			q.putUsed(taken, h, 0)
			taken++
			q.lastAvail++
			switch {
			case size <= 0:
				st.TXShort++
			case size > len(dst):
				st.TXOversize++
			default:
				sizes[n] = size
				n++
				st.TXFrames++
				st.TXBytes += uint64(size)
			}
		}
	}
	if taken > 0 {
		q.publish(taken)
		call = q.needCall(old)
	}
	return n, more, call, nil
}

// readFrame walks the chain at head, checking every descriptor, and copies
// the frame after the header into dst. It returns the frame's length: 0
// or less when the chain holds no frame after the header, more than
// len(dst) when the frame did not fit (then dst holds nothing useful). The
// chain is walked to its end either way, so a bad descriptor is always
// found.
func (q *virtq) readFrame(m *memory, head uint16, hdrLen int, dst []byte) (int, error) {
	skip := uint64(hdrLen)
	var total uint64 // frame bytes after the header; at most num * 4 GiB
	i := head
	for count := 1; ; count++ {
		d := q.readDesc(i)
		if d.flags&^descFKnown != 0 {
			return 0, violation("queue %d: descriptor %d has flags %#x: indirect or unknown", q.index, i, d.flags)
		}
		if d.flags&descFWrite != 0 {
			return 0, violation("queue %d: descriptor %d in a TX chain is device-writable", q.index, i)
		}
		if !m.mapped(d.addr, uint64(d.len)) {
			return 0, violation("queue %d: descriptor %d points outside guest memory: %#x+%#x", q.index, i, d.addr, d.len)
		}
		addr, n := d.addr, uint64(d.len)
		if skip > 0 {
			s := min(skip, n)
			addr += s
			n -= s
			skip -= s
		}
		if n > 0 {
			if total < uint64(len(dst)) {
				c := min(n, uint64(len(dst))-total)
				m.copyFrom(dst[total:total+c], addr)
			}
			total += n
		}
		if d.flags&descFNext == 0 {
			break
		}
		if int(d.next) >= q.num {
			return 0, violation("queue %d: descriptor %d chains to %d, queue size %d", q.index, i, d.next, q.num)
		}
		if count >= q.num {
			return 0, violation("queue %d: chain from descriptor %d is longer than the queue (%d): a loop", q.index, head, q.num)
		}
		i = d.next
	}
	if skip > 0 {
		return 0, nil
	}
	return int(total), nil
}
