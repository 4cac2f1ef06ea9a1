// Command linertt prints, in nanoseconds, how long a cache line takes to
// go from one CPU to another and back (internal/cacheline): make
// bench-peers logs it before and after each vhost-user point, between
// the guests' CPU and the switch's.
//
//	linertt [CPU CPU]   (default 0 1)
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"

	"github.com/vknetd/vknetd/internal/cacheline"
)

func main() {
	cpus := [2]int{0, 1}
	switch len(os.Args) {
	case 1:
	case 3:
		for i := range cpus {
			n, err := strconv.Atoi(os.Args[1+i])
			if err != nil || n < 0 {
				fmt.Fprintf(os.Stderr, "linertt: %q is not a CPU number\n", os.Args[1+i])
				os.Exit(2)
			}
			cpus[i] = n
		}
	default:
		fmt.Fprintln(os.Stderr, "usage: linertt [CPU CPU]")
		os.Exit(2)
	}
	if runtime.GOMAXPROCS(0) < 2 {
		fmt.Fprintln(os.Stderr, "linertt: needs two CPUs (GOMAXPROCS is 1)")
		os.Exit(1)
	}
	failed := make(chan error, 2)
	rtt := cacheline.RoundTrip(func(side int) {
		runtime.LockOSThread() // for the life of the goroutine: it ends with the program
		if err := pinThread(cpus[side]); err != nil {
			failed <- fmt.Errorf("linertt: CPU %d: %w", cpus[side], err)
		}
	})
	select {
	case err := <-failed:
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	default:
	}
	fmt.Println(rtt.Nanoseconds())
}
