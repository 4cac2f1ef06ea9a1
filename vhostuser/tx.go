package vhostuser

import "github.com/vknetd/vknetd/gso"

// txRules is how readBatch treats the frames of one TX ring: what their
// header is and may ask for, and where a frame too big for its buffer may
// go instead.
type txRules struct {
	hdrLen int // virtio-net header before every frame: 10 or 12
	// sendable is what the guest negotiated to send (CSUM, HOST_TSO4/6,
	// HOST_ECN). A header asking for more broke the protocol: the frame
	// is dropped (Stats.TXBadHdr). Zero: headers are not handed out.
	sendable gso.Offloads
	// large, if not nil, gives a bigger buffer for slot when a frame does
	// not fit bufs[slot] (Config.Large).
	large func(slot int) []byte
	// split, when not 0, is how many bytes of a frame whose header asks
	// nothing are copied into its buffer: the rest stays in the guest's
	// memory, its pieces in rests[slot], until the caller copies it
	// (Device.CopyRest, Device.WriteRXFrom) and the chains go back to the
	// guest (Device.ReleaseTX). See direct.go. splitOver (split at least)
	// is how long a frame in one descriptor may be and still be copied
	// whole, by readOneDesc.
	split, splitOver int
	rests            []txRest
	// isSplit[slot] says the frame in slot was split: its rest is in
	// rests[slot]. One byte a frame to clear, not a txRest.
	isSplit []bool
}

// readBatch takes frames from a TX ring into bufs[i], stripping the
// virtio-net header (decoded into hdrs[i] when hdrs is not nil), and
// records their lengths in sizes. Every chain it takes is returned to the
// guest as used before it returns, so no guest buffer outlives the call.
//
// A buffer rules.large returned replaces bufs[slot] and stays there even
// when that frame is dropped after all (the next frame reuses it), so the
// caller finds every buffer it handed out in bufs.
//
// more says the ring may hold frames we did not take, and that the guest
// was asked not to kick: call again. With more false the ring was seen
// empty after kicks were allowed again, so the next frame will kick;
// or, on a polled ring (q.polled), seen empty with kicks left off.
// call says the guest wants to be told about the used entries.
func (q *virtq) readBatch(m *memory, rules *txRules, bufs [][]byte, sizes []int, hdrs []gso.VirtioNetHdr, st *Stats) (n int, more, call bool, err error) {
	return q.readBatchFrom(m, rules, bufs, sizes, hdrs, st, 0)
}

// readBatchFrom is readBatch with bufs[:from] taken already (by an
// announcement, see Device.ReadTXBatch): frames go to bufs[from] on, and
// n counts those before. Slots keep their place in bufs, so rules.large
// is asked for the slot the caller knows.
func (q *virtq) readBatchFrom(m *memory, rules *txRules, bufs [][]byte, sizes []int, hdrs []gso.VirtioNetHdr, st *Stats, from int) (n int, more, call bool, err error) {
	n = from
	// Chains held from an earlier call (split reads) are released first.
	if q.held > 0 {
		call = q.releaseHeld()
	}
	old := q.usedIdx
	taken := 0    // used entries written and not yet published
	held := false // a frame was split: the chains stay ours until releaseHeld
	// Nothing is published before the end, so every chain this call
	// walks is in flight at once: distinct descriptors, num at most.
	q.budget = q.num
	var raw [gso.HdrSizeMrgRxbuf]byte
ring:
	for {
		avail, err := q.pending()
		if err != nil {
			return n, false, false, err
		}
		if avail == 0 && !q.kicksAllowed {
			if q.polled {
				q.kickWhenHalfFull()
			} else {
				q.allowKicks(q.lastAvail) // the avail idx we just saw
				if avail, err = q.pending(); err != nil {
					return n, false, false, err
				}
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
		k := min(avail, len(bufs)-n, q.num-taken)
		q.prefetchChains(m, k, nil, txPrefetchLen, false)
		q.prefetchUsed(taken, k)
		for ; avail > 0 && n < len(bufs) && taken < q.num; avail-- {
			h, err := q.head(0)
			if err != nil {
				return n, false, false, err
			}
			size, ok := q.readOneDesc(m, h, rules, &raw, bufs[n])
			var wait bool
			if ok {
				if rules.split > 0 {
					rules.isSplit[n] = false
				}
			} else if size, wait, err = q.readFrame(m, h, rules, &raw, bufs, n); err != nil {
				return n, false, false, err
			}
			if wait {
				// No large buffer for it now: the chain stays in the
				// ring, untouched, for a call that has one.
				more = true
				break ring
			}
			q.putUsed(taken, h, 0)
			taken++
			q.lastAvail++
			held = held || rules.split > 0 && rules.isSplit[n]
			switch {
			case size <= 0:
				st.TXShort++
				continue
			case size > len(bufs[n]):
				st.TXOversize++
				continue
			}
			// A header without flags or a GSO type asks for nothing, and
			// its other fields mean nothing: most frames, decoded as zero.
			var hdr gso.VirtioNetHdr
			if raw[0]|raw[1] != 0 {
				hdr.Decode(raw[:], rules.hdrLen)
				hdr.NumBuffers = 0 // meaningless on TX
				// Bits no driver may send are a lie whatever was
				// negotiated, even in a header asking for nothing.
				switch hdr.Undefined() {
				case gso.FlagsInvalid:
					st.TXHdrFlags++
					continue
				case gso.GSOTypeUnknown:
					st.TXHdrGSOType++
					continue
				}
				if !rules.sendable.Takes(hdr) {
					st.TXBadHdr++
					continue
				}
			}
			sizes[n] = size
			if hdrs != nil {
				if rules.sendable == 0 {
					hdr = gso.VirtioNetHdr{} // the rest is noise nobody negotiated
				}
				hdrs[n] = hdr
			}
			n++
			st.TXFrames++
			st.PairTXFrames[q.index/2]++
			st.TXBytes += uint64(size)
		}
		if avail > 0 {
			// Chains seen and not taken: the ring holds more, known
			// without loading the idx, a line the guest keeps writing,
			// a second time.
			more = true
			break
		}
	}
	if held {
		// The rests of split frames are read after this returns: the
		// chains stay ours, their used entries unpublished, until
		// releaseHeld. A batch of short frames goes back at once.
		q.held += taken
		return n, more, call, nil
	}
	if taken > 0 {
		q.publish(taken)
		call = q.needCall(old) || call
	}
	return n, more, call, nil
}

// txPrefetchLen is how much of a TX frame's first buffer is prefetched:
// its header and the head the switch decides on, two cache lines.
const txPrefetchLen = 128

// readFrame walks the chain at head, copies its first rules.hdrLen bytes,
// the virtio-net header, into raw and the frame after them into
// bufs[slot]. It returns the frame's length: 0 or less when the chain holds
// no frame after the header, more than len(bufs[slot]) when the frame did
// not fit (then the buffer holds nothing useful). The header may be cut
// across descriptors anywhere. A chain is walked to its end, so a bad
// descriptor is found, unless its frame is known to be too long: then the
// walk stops there, so a dropped frame costs at most its buffer's length
// in steps, never the queue size.
//
// When the frame outgrows bufs[slot] and rules.large gives a bigger
// buffer, what was copied moves there, the buffer replaces bufs[slot] and
// the copy goes on. When rules.large has none to give (nil), readFrame
// stops and reports wait: the frame is to stay in the ring until a buffer
// is free, as a socket's frame stays in the kernel, rather than be lost.
//
// Every descriptor walked, zero-length or not, is paid from q.budget.
func (q *virtq) readFrame(m *memory, head uint16, rules *txRules, raw *[gso.HdrSizeMrgRxbuf]byte, bufs [][]byte, slot int) (size int, wait bool, err error) {
	dst := bufs[slot]
	large := rules.large
	hdr := raw[:rules.hdrLen]    // the header's bytes not read yet
	var total uint64             // frame bytes after the header; at most num * 4 GiB
	splitting := rules.split > 0 // the frame may yet be split
	if splitting {
		rules.isSplit[slot] = false
	}
	var w chainWalker
	w.start(q, m, head, false, &q.budget)
	for {
		seg, ok, err := w.segment()
		if err != nil {
			return 0, false, err
		}
		if !ok {
			break
		}
		if len(hdr) > 0 {
			c := copy(hdr, seg)
			hdr, seg = hdr[c:], seg[c:]
			if len(seg) == 0 {
				continue
			}
		}
		n := uint64(len(seg))
		if splitting && total+n > uint64(rules.split) {
			// Only a frame whose header asks nothing (its other fields
			// are noise then): one with offload work is judged whole.
			rest := &rules.rests[slot]
			if !rules.isSplit[slot] {
				rest.n = 0
			}
			if raw[0]|raw[1] == 0 && rest.keep(seg, total, uint64(rules.split), dst) {
				rules.isSplit[slot] = true
				total += n
				continue
			}
			rules.isSplit[slot] = false // copied whole (keep spilled), as without split
			splitting = false
		}
		if total+n > uint64(len(dst)) && large != nil {
			b := large(slot)
			if b == nil {
				return 0, true, nil
			}
			// Asked once per frame: a frame longer than b is dropped.
			if len(b) > len(dst) {
				copy(b, dst[:total])
				dst = b
				bufs[slot] = b
			}
			large = nil
		}
		if total < uint64(len(dst)) {
			copy(dst[total:], seg)
		}
		total += n
		if total > uint64(len(dst)) && large == nil {
			return int(total), false, nil // too long for any buffer: dropped
		}
	}
	if len(hdr) > 0 {
		return 0, false, nil
	}
	return int(total), false, nil
}

// readOneDesc is readFrame's short walk, tried first, for the chain most
// drivers send (Linux and DPDK with ANY_LAYOUT or VERSION_1): one
// descriptor, in the region that answered last, holding the header and a
// frame that fits dst and is short enough to copy whole (not split). It
// checks what the walk would on that descriptor (budget, flags, bounds)
// and copies as the walk would; ok false means the chain is not such a
// one and nothing was done, nothing paid: readFrame walks it from the
// start, checking everything again on its own reads of the table.
func (q *virtq) readOneDesc(m *memory, head uint16, rules *txRules, raw *[gso.HdrSizeMrgRxbuf]byte, dst []byte) (size int, ok bool) {
	d := q.readDesc(head)
	hdrLen := uint64(rules.hdrLen)
	b, in := m.r[m.last].within(d.addr, uint64(d.len))
	if d.flags != 0 || q.budget <= 0 || uint64(d.len) <= hdrLen || d.len < gso.HdrSizeMrgRxbuf || !in {
		return 0, false
	}
	size = int(d.len) - rules.hdrLen
	if size > len(dst) || rules.split > 0 && size > rules.splitOver {
		return 0, false
	}
	q.budget--
	q.walked++
	// The header in two fixed-size moves, not a call to memmove: 12
	// bytes (b holds at least that), of which a 10-byte header's last
	// two, frame bytes, are not read from raw.
	*(*[8]byte)(raw[:8]) = [8]byte(b[:8])
	*(*[4]byte)(raw[8:12]) = [4]byte(b[8:12])
	copy(dst, b[hdrLen:])
	return size, true
}
