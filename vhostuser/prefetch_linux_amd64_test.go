package vhostuser

import (
	"os"
	"strings"
	"testing"
)

// The CPUID check that guards PREFETCHW agrees with the kernel's view of
// the CPU (its flag for the same bit is 3dnowprefetch).
func TestHasPrefetchWMatchesTheKernel(t *testing.T) {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skipf("no /proc/cpuinfo: %v", err)
	}
	flags := ""
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "flags") {
			flags = " " + line + " "
			break
		}
	}
	if want := strings.Contains(flags, " 3dnowprefetch "); hasPrefetchW != want {
		t.Errorf("hasPrefetchW = %v, the kernel's 3dnowprefetch flag says %v", hasPrefetchW, want)
	}
}
