package hang

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A test that hangs fails within its deadline, and the failure names it.
// The hang runs in a child test binary, which the guard ends.
func TestGuardEndsAHangNamingIt(t *testing.T) {
	if os.Getenv("HANG_TEST_CHILD") == "1" {
		t.Run("stuck case", func(t *testing.T) {
			defer Guard(t, 100*time.Millisecond)()
			time.Sleep(time.Minute)
		})
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestGuardEndsAHangNamingIt$", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), "HANG_TEST_CHILD=1")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err == nil {
		t.Fatalf("the hanging test passed:\n%s", out)
	}
	if want := "TestGuardEndsAHangNamingIt/stuck_case: still running after 100ms"; !strings.Contains(string(out), want) {
		t.Errorf("the failure does not say %q:\n%s", want, out)
	}
	if took > 30*time.Second {
		t.Errorf("the hang was ended after %v, not at its deadline", took)
	}
}

// A test that ends in time is not touched.
func TestGuardStopped(t *testing.T) {
	Guard(t, 20*time.Millisecond)()
	time.Sleep(100 * time.Millisecond)
}
