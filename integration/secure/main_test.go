//go:build linux

package secure

import (
	"os"
	"testing"

	"github.com/vknetd/vknetd/internal/testbed"
)

// vknetd is the binary under test, built once by TestMain; empty when the
// tests cannot run here.
var vknetd string

func TestMain(m *testing.M) {
	if mode := os.Getenv(probeEnv); mode != "" {
		os.Exit(runDgramProbe(mode)) // this binary run as a client user
	}
	if os.Geteuid() != 0 {
		// Every test skips with testbed.RequireRoot's message; building
		// would be wasted.
		os.Exit(m.Run())
	}
	os.Exit(testbed.RunWithVknetd(m, "integration/secure", &vknetd))
}
