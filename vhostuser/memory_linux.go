package vhostuser

import "golang.org/x/sys/unix"

// regionMapping is how one region will be mapped: length bytes of its
// file from start, the region sitting delta bytes into the mapping.
type regionMapping struct {
	start, delta, length uint64
}

// planRegion checks the file behind fd for region i and works out its
// mapping, without mapping anything: the caller adds up the lengths and
// checks them against the memory budget first.
//
// The file must be a regular file (memfd, hugetlbfs, tmpfs) at least
// MmapOffset+Size long: touching a shared mapping past the end of its file
// raises SIGBUS. mmap offsets must be aligned to the file's block size,
// which is the huge page size on hugetlbfs, so the mapping starts at the
// offset rounded down, the region sits delta bytes into it, and its length
// is rounded up to a whole block (what the kernel maps and what the
// budget counts).
func planRegion(i int, r Region, fd int) (regionMapping, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return regionMapping{}, violation("memory region %d: fstat of its fd: %v", i, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return regionMapping{}, violation("memory region %d: fd is not a regular file (mode %#o), not mappable guest memory", i, st.Mode)
	}
	if st.Size < 0 || uint64(st.Size) < r.MmapOffset+r.Size {
		return regionMapping{}, violation("memory region %d: file of %d bytes is shorter than offset %#x + size %#x", i, st.Size, r.MmapOffset, r.Size)
	}
	align := uint64(unix.Getpagesize())
	if b := uint64(st.Blksize); b > align && b&(b-1) == 0 && b <= 1<<30 {
		align = b
	}
	start := r.MmapOffset &^ (align - 1)
	delta := r.MmapOffset - start
	return regionMapping{start: start, delta: delta, length: (delta + r.Size + align - 1) &^ (align - 1)}, nil
}

// mapRegion maps region i as planned and returns the whole mapping (for
// munmap) and the view of the region's Size bytes in it.
func mapRegion(i int, r Region, fd int, m regionMapping) (mapping, mem []byte, err error) {
	b, err := unix.Mmap(fd, int64(m.start), int(m.length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, violation("memory region %d: mmap of %#x bytes at offset %#x: %v", i, m.length, m.start, err)
	}
	return b, b[m.delta : m.delta+r.Size], nil
}

func unmap(b []byte) { _ = unix.Munmap(b) }
