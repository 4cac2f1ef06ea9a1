//go:build unix

package ring

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// mapSlab gives a slab of n zero bytes in an anonymous mapping of its
// own, outside the garbage-collected heap. The collector paces itself on
// the heap it counts as live, and lets garbage grow to as much again
// before it collects. The pool is nearly all of that heap (110 MB with
// the defaults: --max-clients 1024 and a TAP with offloads) yet mostly
// untouched, since buffers are handed out low indices first; on the heap
// it let the garbage of each vhost-user connection (its buffers, its
// protocol messages, its log lines: some 18 KB) pile up to 110 MB, all
// of it resident, before the first collection (issue 15: 20 MB at start,
// 139 MB after 24,000 connect cycles). Out of the heap, the slab's pages
// still cost memory only once touched, and the heap the collector paces
// on is the few MB that really change.
func mapSlab(n int) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("ring: mapping %d bytes for the frame buffers: %w", n, err)
	}
	return b, nil
}

func unmapSlab(b []byte) {
	if b != nil {
		_ = unix.Munmap(b)
	}
}
