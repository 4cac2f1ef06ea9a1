package vhostuser

// maxRegions is the baseline region count of a vhost-user memory table;
// more needs CONFIGURE_MEM_SLOTS, which we do not offer.
const maxRegions = 8

// maxRegionSize bounds one region so that sizes and offsets stay far from
// overflowing an int on 64-bit hosts (1 TiB of guest RAM per region).
const maxRegionSize = 1 << 40

// Region is one entry of SET_MEM_TABLE: Size bytes of guest memory that the
// guest sees at GuestAddr, QEMU at UserAddr, and that sit MmapOffset bytes
// into the file sent with it.
type Region struct {
	GuestAddr  uint64
	Size       uint64
	UserAddr   uint64
	MmapOffset uint64
}

// region is a Region mapped into our address space: mem holds its Size
// bytes.
type region struct {
	guest, user, size uint64
	mem               []byte
}

// within returns the n bytes at guest address gpa when every one of them
// lies in r: the one bounds check of a descriptor's buffer in the region
// that answered last, which the chain walker and the short walks share.
func (r *region) within(gpa, n uint64) ([]byte, bool) {
	off := gpa - r.guest
	if off >= r.size || n > r.size-off {
		return nil, false
	}
	return r.mem[off : off+n], true
}

// memory is the guest's memory as we see it: up to maxRegions mapped
// regions, none overlapping another in guest-physical or in QEMU-virtual
// space. Lookups scan (eight regions at most), starting with the region
// that answered last, which is the common case by far.
type memory struct {
	r    [maxRegions]region
	n    int
	last int
}

// validateRegions checks a memory table before anything is mapped.
func validateRegions(regs []Region) error {
	if len(regs) == 0 || len(regs) > maxRegions {
		return violation("memory table has %d regions, want 1 to %d", len(regs), maxRegions)
	}
	for i, r := range regs {
		switch {
		case r.Size == 0 || r.Size > maxRegionSize:
			return violation("memory region %d: size %#x is 0 or over %#x", i, r.Size, uint64(maxRegionSize))
		case r.GuestAddr+r.Size < r.GuestAddr:
			return violation("memory region %d: guest address %#x + size %#x overflows", i, r.GuestAddr, r.Size)
		case r.UserAddr+r.Size < r.UserAddr:
			return violation("memory region %d: user address %#x + size %#x overflows", i, r.UserAddr, r.Size)
		case r.MmapOffset > maxRegionSize:
			return violation("memory region %d: mmap offset %#x is over %#x", i, r.MmapOffset, uint64(maxRegionSize))
		}
		for j := 0; j < i; j++ {
			o := regs[j]
			if overlap(r.GuestAddr, r.Size, o.GuestAddr, o.Size) {
				return violation("memory regions %d and %d overlap in guest memory (%#x+%#x, %#x+%#x)",
					j, i, o.GuestAddr, o.Size, r.GuestAddr, r.Size)
			}
			if overlap(r.UserAddr, r.Size, o.UserAddr, o.Size) {
				return violation("memory regions %d and %d overlap in front-end memory (%#x+%#x, %#x+%#x)",
					j, i, o.UserAddr, o.Size, r.UserAddr, r.Size)
			}
		}
	}
	return nil
}

// overlap says whether [a, a+an) and [b, b+bn) share a byte; neither sum
// overflows (validateRegions checked).
func overlap(a, an, b, bn uint64) bool { return a < b+bn && b < a+an }

// add appends a mapped region; regs were validated and mem has r.Size bytes.
func (m *memory) add(r Region, mem []byte) {
	m.r[m.n] = region{guest: r.GuestAddr, user: r.UserAddr, size: r.Size, mem: mem[:r.Size:r.Size]}
	m.n++
}

// find returns the region holding guest address gpa, or nil.
func (m *memory) find(gpa uint64) *region {
	if m.last < m.n {
		if r := &m.r[m.last]; gpa-r.guest < r.size {
			return r
		}
	}
	for i := 0; i < m.n; i++ {
		if r := &m.r[i]; gpa-r.guest < r.size {
			m.last = i
			return r
		}
	}
	return nil
}

// slice returns the longest view of guest memory starting at gpa, up to n
// bytes, that lies in one region; nil when gpa is not mapped.
func (m *memory) slice(gpa, n uint64) []byte {
	r := m.find(gpa)
	if r == nil {
		return nil
	}
	off := gpa - r.guest
	if n > r.size-off {
		n = r.size - off
	}
	return r.mem[off : off+n]
}

// mapped says whether every byte of [gpa, gpa+n) is guest memory we
// mapped. A range may run across adjacent regions (hugepage-backed guests
// are split that way); a wrapping range is never mapped.
func (m *memory) mapped(gpa, n uint64) bool {
	if gpa+n < gpa {
		return false
	}
	for n > 0 {
		s := m.slice(gpa, n)
		if s == nil {
			return false
		}
		gpa += uint64(len(s))
		n -= uint64(len(s))
	}
	return true
}

// copyFrom fills dst from guest memory at gpa, region by region; false if
// a byte of the range is not mapped (the caller checked with mapped, so
// this is a second line of defence, not a path taken).
func (m *memory) copyFrom(dst []byte, gpa uint64) bool {
	for len(dst) > 0 {
		s := m.slice(gpa, uint64(len(dst)))
		if s == nil {
			return false
		}
		n := copy(dst, s)
		dst = dst[n:]
		gpa += uint64(n)
	}
	return true
}

// copyTo writes src into guest memory at gpa, region by region.
func (m *memory) copyTo(gpa uint64, src []byte) bool {
	for len(src) > 0 {
		s := m.slice(gpa, uint64(len(src)))
		if s == nil {
			return false
		}
		n := copy(s, src)
		src = src[n:]
		gpa += uint64(n)
	}
	return true
}

// user returns the n bytes at front-end virtual address ua, which must all
// lie in one region (vring addresses come this way); nil otherwise.
func (m *memory) user(ua, n uint64) []byte {
	if ua+n < ua {
		return nil
	}
	for i := 0; i < m.n; i++ {
		r := &m.r[i]
		if off := ua - r.user; off < r.size && n <= r.size-off {
			return r.mem[off : off+n]
		}
	}
	return nil
}

// guestOf says which guest address front-end address ua maps to, for error
// messages and for tests; ok is false when it is not mapped.
func (m *memory) guestOf(ua uint64) (gpa uint64, ok bool) {
	for i := 0; i < m.n; i++ {
		r := &m.r[i]
		if off := ua - r.user; off < r.size {
			return r.guest + off, true
		}
	}
	return 0, false
}
