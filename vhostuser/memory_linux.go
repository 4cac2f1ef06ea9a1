package vhostuser

import "golang.org/x/sys/unix"

// mapRegion maps the file behind fd for region i and returns the whole
// mapping (for munmap) and the view of the region's Size bytes in it.
//
// The file must be a regular file (memfd, hugetlbfs, tmpfs) at least
// MmapOffset+Size long: touching a shared mapping past the end of its file
// raises SIGBUS. mmap offsets must be aligned to the file's block size,
// which is the huge page size on hugetlbfs, so the mapping starts at the
// offset rounded down and the region sits delta bytes into it.
func mapRegion(i int, r Region, fd int) (mapping, mem []byte, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, nil, violation("memory region %d: fstat of its fd: %v", i, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, nil, violation("memory region %d: fd is not a regular file (mode %#o), not mappable guest memory", i, st.Mode)
	}
	if st.Size < 0 || uint64(st.Size) < r.MmapOffset+r.Size {
		return nil, nil, violation("memory region %d: file of %d bytes is shorter than offset %#x + size %#x", i, st.Size, r.MmapOffset, r.Size)
	}
	align := uint64(unix.Getpagesize())
	if b := uint64(st.Blksize); b > align && b&(b-1) == 0 && b <= 1<<30 {
		align = b
	}
	start := r.MmapOffset &^ (align - 1)
	delta := r.MmapOffset - start
	length := (delta + r.Size + align - 1) &^ (align - 1)
	b, err := unix.Mmap(fd, int64(start), int(length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, violation("memory region %d: mmap of %#x bytes at offset %#x: %v", i, length, start, err)
	}
	return b, b[delta : delta+r.Size], nil
}

func unmap(b []byte) { _ = unix.Munmap(b) }
