package vhostuser

// prefetchRead asks the CPU to start loading the cache lines of spans,
// which the caller is about to read; prefetchWrite, to take them for
// writing. A prefetch never faults, whatever the address: these are
// hints, and nothing depends on them but time.
//
//go:noescape
func prefetchRead(spans []lineSpan)

func prefetchWrite(spans []lineSpan) {
	if hasPrefetchW {
		prefetchExclusive(spans)
	} else {
		prefetchRead(spans)
	}
}

// prefetchExclusive is PREFETCHW on each line of spans; only where the
// CPU has it (hasPrefetchW), since the instruction is not in every x86-64
// CPU.
//
//go:noescape
func prefetchExclusive(spans []lineSpan)

// hasPrefetchW: CPUID leaf 0x80000001 sets ECX bit 8 (PRFCHW, AMD's
// 3DNowPrefetch) where PREFETCHW exists.
var hasPrefetchW = func() bool {
	if top, _ := cpuid(0x80000000); top < 0x80000001 {
		return false
	}
	_, ecx := cpuid(0x80000001)
	return ecx&(1<<8) != 0
}()

func cpuid(leaf uint32) (eax, ecx uint32)
