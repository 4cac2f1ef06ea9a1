package testbed

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuildVknetd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/vknetd")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command on PATH")
	}
	bin, remove, err := BuildVknetd()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		remove()
		if _, err := os.Stat(filepath.Dir(bin)); !os.IsNotExist(err) {
			t.Errorf("build directory %s after remove: %v", filepath.Dir(bin), err)
		}
	}()
	// Usage errors exit 2 after naming the flag: proof the binary is vknetd and runs.
	out, err := exec.Command(bin, "--no-such-flag").CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "no-such-flag") {
		t.Errorf("%s --no-such-flag: %v, output %q; want exit status 2 naming the flag", bin, err, out)
	}
}

func TestModuleRoot(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command on PATH")
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "vknetd")); err != nil {
		t.Errorf("module root %s has no cmd/vknetd: %v", root, err)
	}

	// Outside any module the error must say what to do, not fail in go build.
	t.Chdir(t.TempDir())
	t.Setenv("GO111MODULE", "on")
	t.Setenv("GOFLAGS", "")
	if _, _, err := BuildVknetd(); err == nil || !strings.Contains(err.Error(), "inside the vknetd module") {
		t.Errorf("BuildVknetd outside the module: %v", err)
	}
}

func TestShortTempDir(t *testing.T) {
	var dir string
	t.Run("use", func(t *testing.T) {
		dir = ShortTempDir(t)
		// The longest socket path the tests make must still fit in sun_path.
		if p := filepath.Join(dir, "vknet.stream"); len(p) >= 108 {
			t.Errorf("socket path %s is %d bytes, sun_path holds 107", p, len(p))
		}
		if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s after cleanup: %v", dir, err)
	}
}
