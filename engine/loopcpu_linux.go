package engine

import (
	"time"

	"golang.org/x/sys/unix"
)

// LoopCPU returns the CPU time (user and system) each loop's thread has
// used so far, the first loop's first: what --workers costs, measured
// where it is spent. Each loop reads its own, between rounds.
func (e *Engine) LoopCPU() ([]time.Duration, error) {
	out := make([]time.Duration, len(e.loops))
	for i, l := range e.loops {
		var err error
		if derr := l.do(func() { out[i], err = threadCPU() }); derr != nil {
			return nil, derr
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func threadCPU() (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
