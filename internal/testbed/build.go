package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// BuildVknetd builds ./cmd/vknetd of the module the tests run in into a new temporary
// directory and returns the binary's path and a function that removes the directory.
// TestMain calls it once, so that every test of a package drives the same fresh build
// of the working tree, not whatever vknetd is installed.
func BuildVknetd() (bin string, remove func(), err error) { return BuildCommand("vknetd") }

// BuildCommand builds ./cmd/<name> (vknetd, vknetplug...) as BuildVknetd does.
func BuildCommand(name string) (bin string, remove func(), err error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp("", name+"-build-")
	if err != nil {
		return "", nil, err
	}
	remove = func() { os.RemoveAll(dir) }
	bin = filepath.Join(dir, name)
	build := exec.Command("go", "build", "-o", bin, "./cmd/"+name)
	build.Dir = root
	// As make build does: without cgo, so that --user can drop
	// capabilities on every thread (see cmd/vknetd/privdrop_linux.go).
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		remove()
		return "", nil, fmt.Errorf("go build ./cmd/%s in %s: %v\n%s", name, root, err, out)
	}
	return bin, remove, nil
}

// RunWithVknetd is the body of TestMain for a package whose tests drive vknetd: it
// builds vknetd with BuildVknetd, stores its path in *bin, runs the tests and removes
// the build. When the build fails it says so on stderr, after pkg, and returns 1, so
// the package fails with the compiler's output instead of every test failing alone.
func RunWithVknetd(m *testing.M, pkg string, bin *string) int {
	path, remove, err := BuildVknetd()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", pkg, err)
		return 1
	}
	defer remove()
	*bin = path
	return m.Run()
}

// ModuleRoot returns the directory of the go.mod the go command finds from the
// current directory, which is the package's own when go test runs it.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("go env GOMOD found no go.mod: run the tests inside the vknetd module")
	}
	return filepath.Dir(gomod), nil
}

// ShortTempDir returns a temporary directory with a short path, removed at cleanup.
// Not t.TempDir: that embeds the test's name, and a unix socket path must fit in the
// 108 bytes of sun_path.
func ShortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vkt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
