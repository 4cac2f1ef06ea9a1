package vhostguest

import (
	"encoding/binary"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
)

// Ring layout offsets (virtio 1.x split virtqueue).
const (
	descNext  = 1
	descWrite = 2
)

func (g *Guest) setDesc(r *ring, i uint16, addr uint64, n uint32, flags, next uint16) {
	b := g.mem[r.desc+16*int(i):]
	binary.LittleEndian.PutUint64(b, addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
}

func (g *Guest) descAt(r *ring, i uint16) (flags, next uint16) {
	b := g.mem[r.desc+16*int(i):]
	return binary.LittleEndian.Uint16(b[12:]), binary.LittleEndian.Uint16(b[14:])
}

// publish makes avail entries up to r.availIdx visible and kicks queue q
// if the device asked for it. It returns whether it kicked.
func (g *Guest) publish(q int, old uint16) bool {
	r := &g.q[q]
	if r.availIdx == old {
		return false
	}
	store32(g.mem, r.avail, uint32(r.availIdx)<<16) // avail flags 0: we want calls
	fence()
	var kick bool
	if g.features&FeatEventIdx != 0 {
		ev := load16(g.mem, r.used+4+8*r.num) // avail_event
		kick = r.availIdx-ev-1 < r.availIdx-old
	} else {
		kick = load32(g.mem, r.used)&1 == 0 // !VRING_USED_F_NO_NOTIFY
	}
	if kick {
		var one [8]byte
		one[0] = 1
		unix.Write(g.kick[q], one[:])
		g.Kicks[q%2]++
	}
	return kick
}

// usedIdx loads the device's used idx with acquire semantics.
func (g *Guest) usedIdx(r *ring) uint16 { return uint16(load32(g.mem, r.used) >> 16) }

func (g *Guest) usedEntry(r *ring, k uint16) (id uint16, n uint32) {
	b := g.mem[r.used+4+8*int(k&uint16(r.num-1)):]
	return uint16(binary.LittleEndian.Uint32(b)), binary.LittleEndian.Uint32(b[4:])
}

// askCall sets used_event so the device calls for its next used entry.
func (g *Guest) askCall(r *ring) {
	if g.features&FeatEventIdx != 0 {
		store16(g.mem, r.avail+4+2*r.num, r.lastUsed)
	}
}

// PostRX posts up to n empty RX buffers, one descriptor each, and returns
// how many it posted.
func (g *Guest) PostRX(n int) int {
	r := &g.q[2*g.pair]
	old := r.availIdx
	posted := 0
	for ; posted < n && len(r.free) > 0; posted++ {
		i := r.free[len(r.free)-1]
		r.free = r.free[:len(r.free)-1]
		g.setDesc(r, i, GuestAddr(r.buf+int(i)*r.bufSize), uint32(r.bufSize), descWrite, 0)
		binary.LittleEndian.PutUint16(g.mem[r.avail+4+2*int(r.availIdx&uint16(r.num-1)):], i)
		r.availIdx++
	}
	g.askCall(r)
	g.publish(2*g.pair, old)
	return posted
}

// Receive takes frames the device wrote into the RX ring, copying each
// (without header, reassembled from the buffers num_buffers says it
// spans) into bufs[k], its length into sizes[k] and, when hdrs is not
// nil, its header into hdrs[k]; it returns how many. A frame longer than
// bufs[k] is cut to it and counted (RXTruncated). Buffers go back to the
// free list; PostRX them again.
func (g *Guest) Receive(bufs [][]byte, sizes []int, hdrs []gso.VirtioNetHdr) int {
	r := &g.q[2*g.pair]
	got := 0
	for got < len(bufs) {
		idx := g.usedIdx(r)
		if idx == r.lastUsed {
			break
		}
		id, _ := g.usedEntry(r, r.lastUsed)
		first := g.mem[r.buf+int(id)*r.bufSize:][:r.bufSize]
		nb := 1
		if g.hdrLen == 12 {
			nb = int(binary.LittleEndian.Uint16(first[10:]))
		}
		if nb < 1 || int(idx-r.lastUsed) < nb {
			break // the rest of the frame is not published yet
		}
		if hdrs != nil {
			hdrs[got].Decode(first, g.hdrLen)
		}
		size, lost := 0, false
		for k := 0; k < nb; k++ {
			id, n := g.usedEntry(r, r.lastUsed)
			data := g.mem[r.buf+int(id)*r.bufSize : r.buf+int(id)*r.bufSize+int(n)]
			if k == 0 {
				data = data[g.hdrLen:]
			}
			c := copy(bufs[got][size:], data)
			size += c
			lost = lost || c < len(data)
			r.free = append(r.free, id)
			r.lastUsed++
		}
		if lost {
			g.RXTruncated++
		}
		sizes[got] = size
		got++
	}
	g.askCall(r)
	return got
}

// Send puts frames on the TX ring, each behind its header hdrs[k] (zero
// when hdrs is nil), reclaiming what the device used first, and kicks
// once if the device wants it. It returns how many it sent: fewer when
// descriptors run out, or at a frame longer than gso.MaxFrameLen. A frame
// and its header fill a chain of TX buffers (with SplitTX: a header
// descriptor, then 4 KiB pieces).
func (g *Guest) Send(frames [][]byte, hdrs []gso.VirtioNetHdr) int {
	r := &g.q[2*g.pair+1]
	g.reclaimTX()
	r.want = 1
	old := r.availIdx
	sent := 0
	for k, f := range frames {
		if len(f) > gso.MaxFrameLen {
			break
		}
		need := (g.hdrLen + len(f) + r.bufSize - 1) / r.bufSize
		if g.opts.SplitTX {
			need = 1 + (len(f)+splitChunk-1)/splitChunk
		}
		if len(r.free) < need {
			r.want = need
			break
		}
		var h gso.VirtioNetHdr
		if hdrs != nil {
			h = hdrs[k]
		}
		h.NumBuffers = 0 // the device's field, on RX only
		var head, prev uint16
		pos := 0 // bytes of f placed
		for c := 0; c < need; c++ {
			i := r.free[len(r.free)-1]
			r.free = r.free[:len(r.free)-1]
			off := r.buf + int(i)*r.bufSize
			room := g.mem[off : off+r.bufSize]
			if g.opts.SplitTX {
				room = room[:splitChunk]
			}
			n := 0
			if c == 0 {
				h.Encode(room, g.hdrLen)
				n = g.hdrLen
			}
			if c > 0 || !g.opts.SplitTX {
				w := copy(room[n:], f[pos:])
				n += w
				pos += w
			}
			g.setDesc(r, i, GuestAddr(off), uint32(n), 0, 0)
			if c == 0 {
				head = i
			} else {
				g.setDesc(r, prev, GuestAddr(r.buf+int(prev)*r.bufSize), g.descLen(r, prev), descNext, i)
			}
			prev = i
		}
		binary.LittleEndian.PutUint16(g.mem[r.avail+4+2*int(r.availIdx&uint16(r.num-1)):], head)
		r.availIdx++
		sent++
	}
	if !g.opts.QuietTX {
		g.askCall(r)
	}
	g.publish(2*g.pair+1, old)
	return sent
}

// RXReady is what a driver calls before it sleeps on CallFD(0) once
// Receive has returned fewer frames than it asked for: it asks the device
// to call for its next used entry, then, after a full barrier, looks at
// the used ring again. True means frames arrived in between (the device
// may have published them before it saw the request, and will not call
// for them): Receive again instead of sleeping.
func (g *Guest) RXReady() bool {
	r := &g.q[2*g.pair]
	g.askCall(r)
	fence()
	return g.usedIdx(r) != r.lastUsed
}

// TXRoom is what a driver calls when Send or SendFromFD took fewer frames
// than it was given, before it sleeps on CallFD(1): it reclaims what the
// device has used, and if fewer descriptors are free than the frame that
// did not fit needs, asks the device to call for its next used entry and,
// after a full barrier, reclaims again. True means that frame fits now.
func (g *Guest) TXRoom() bool {
	r := &g.q[2*g.pair+1]
	need := max(r.want, 1)
	g.reclaimTX()
	if len(r.free) >= need {
		return true
	}
	g.askCall(r)
	fence()
	g.reclaimTX()
	return len(r.free) >= need
}

func (g *Guest) descLen(r *ring, i uint16) uint32 {
	return binary.LittleEndian.Uint32(g.mem[r.desc+16*int(i)+8:])
}

// reclaimTX frees the chains the device has used.
func (g *Guest) reclaimTX() {
	r := &g.q[2*g.pair+1]
	for idx := g.usedIdx(r); r.lastUsed != idx; r.lastUsed++ {
		id, _ := g.usedEntry(r, r.lastUsed)
		for k := 0; k < r.num; k++ {
			r.free = append(r.free, id)
			flags, next := g.descAt(r, id)
			if flags&descNext == 0 {
				break
			}
			id = next
		}
	}
}

// TXInFlight is how many TX frames the device has not used yet.
func (g *Guest) TXInFlight() int {
	r := &g.q[2*g.pair+1]
	return int(r.availIdx - g.usedIdx(r))
}

// CollectCalls reads the call eventfds and adds what they counted to
// Calls; it returns the totals.
func (g *Guest) CollectCalls() [2]uint64 {
	for q, fd := range g.callfd {
		var b [8]byte
		if n, err := unix.Read(fd, b[:]); err == nil && n == 8 {
			g.Calls[q%2] += binary.LittleEndian.Uint64(b[:])
		}
	}
	return g.Calls
}
