package main

import (
	"bufio"
	"math/bits"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// addressSpace is how much address space the daemon has: the user half
// of the machine's virtual addresses (128 TiB on x86-64 and with 48-bit
// arm64, 512 GiB with 39-bit arm64), found as the top of the main
// thread's stack (the kernel puts it just below the end) rounded up to a
// power of two, and at most RLIMIT_AS. The guest memory caps are checked
// against it, so a guest is refused by a cap with a clear reason before
// mmap would fail for want of room.
func addressSpace() uint64 {
	space := uint64(128 << 40)
	if top := stackTop(); top > 1<<30 {
		space = 1 << bits.Len64(top-1)
	}
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_AS, &lim) == nil && lim.Cur != unix.RLIM_INFINITY && lim.Cur < space {
		space = lim.Cur
	}
	return space
}

// stackTop is the end of the [stack] mapping in /proc/self/maps; 0 when
// it cannot be read.
func stackTop() uint64 {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasSuffix(line, "[stack]") {
			continue
		}
		rng, _, _ := strings.Cut(line, " ")
		_, end, _ := strings.Cut(rng, "-")
		top, err := strconv.ParseUint(end, 16, 64)
		if err != nil {
			return 0
		}
		return top
	}
	return 0
}
