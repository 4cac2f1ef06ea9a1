//go:build linux

package integration

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vknetd/vknetd/internal/testbed"
)

// The daemon runs as root: -i naming somebody's file must be refused with
// the file left exactly as it was, and nothing else created (finding 7 of
// issue 7: -i used to truncate, and at exit delete, whatever it named).
func TestPidfileRefusesFilesThatAreNotPidfiles(t *testing.T) {
	needRoot(t)
	dir := testbed.ShortTempDir(t)
	precious := filepath.Join(dir, "precious")
	const content = "do not truncate me\n"
	if err := os.WriteFile(precious, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.pid")
	if err := os.Symlink(precious, link); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "dir.pid")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, path, want string }{
		{"symlink to a file", link, "symbolic link"},
		{"regular file with other content", precious, "content is not a pid"},
		{"directory", sub, "a directory"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sock := filepath.Join(dir, "vknet")
			_, err := tryStartDaemon(t, testbed.NewNetns(t), testbed.DaemonConfig{Sock: sock, Pidfile: c.path, Args: []string{"-U"}})
			var se *testbed.StartError
			if !errors.As(err, &se) {
				t.Fatalf("vknetd started with -i %s (or hung): %v", c.path, err)
			}
			if se.Code == 0 || !strings.Contains(se.Stderr, c.path) || !strings.Contains(se.Stderr, "(-i)") || !strings.Contains(se.Stderr, c.want) {
				t.Errorf("exit status %d, stderr %q; want non-zero and a message naming -i, %s and %q", se.Code, se.Stderr, c.path, c.want)
			}
			if b, err := os.ReadFile(precious); err != nil || string(b) != content {
				t.Errorf("the file behind -i now holds %q (%v), want it untouched", b, err)
			}
			if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Errorf("the symlink is gone or replaced: %v %v", fi, err)
			}
			if fi, err := os.Lstat(sub); err != nil || !fi.IsDir() {
				t.Errorf("the directory is gone or replaced: %v %v", fi, err)
			}
			if fileExists(sock) {
				t.Errorf("the refused daemon created its socket %s", sock)
			}
		})
	}
}
