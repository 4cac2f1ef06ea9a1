package vhostuser

// Frames and buffers for tests, on every platform.

func frame(size, seq int) []byte {
	f := make([]byte, size)
	for i := range f {
		f[i] = byte(i*7 + seq)
	}
	return f
}

func frames(n, size int) [][]byte {
	fs := make([][]byte, n)
	for i := range fs {
		fs[i] = frame(size, i)
	}
	return fs
}

func bufs(n, size int) ([][]byte, []int) {
	b := make([][]byte, n)
	for i := range b {
		b[i] = make([]byte, size)
	}
	return b, make([]int, n)
}
