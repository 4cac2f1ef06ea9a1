package vhostuser

// prefetchRead asks the CPU to start loading the cache lines at addrs,
// which the caller is about to read; prefetchWrite, to take them for
// writing. A prefetch never faults, whatever the address: these are
// hints, and nothing depends on them but time.
//
//go:noescape
func prefetchRead(addrs []uintptr)

//go:noescape
func prefetchWrite(addrs []uintptr)
