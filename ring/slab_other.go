//go:build !unix

package ring

// Without mmap the slabs are ordinary heap memory (see slab_unix.go for
// why vknetd's platforms keep them out of the heap).
func mapSlab(n int) ([]byte, error) { return make([]byte, n), nil }

func unmapSlab([]byte) {}
