package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestPidfileCreatedLockedAndRemoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vknetd.pid")
	p, err := lockPidfile(path)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != strconv.Itoa(os.Getpid())+"\n" {
		t.Errorf("pidfile holds %q, want our pid and a newline", b)
	}
	if _, err := lockPidfile(path); err == nil || !strings.Contains(err.Error(), "locked by a running vknetd") {
		t.Errorf("second lock: %v, want refused as locked", err)
	}
	p.remove()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("pidfile still there after remove: %v", err)
	}
}

func TestPidfileTakesOverStaleAndEmptyPidfiles(t *testing.T) {
	for name, content := range map[string]string{
		"stale":            "12345\n",
		"no newline":       "77",
		"empty":            "",
		"blank":            " \n",
		"padded by a tool": "  4242  \n",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "vknetd.pid")
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			p, err := lockPidfile(path)
			if err != nil {
				t.Fatalf("pidfile holding %q refused: %v", content, err)
			}
			defer p.remove()
			if b, _ := os.ReadFile(path); string(b) != strconv.Itoa(os.Getpid())+"\n" {
				t.Errorf("pidfile holds %q, want our pid", b)
			}
		})
	}
}

// Each of these is somebody's file: -i must refuse it, name -i and the
// path, and leave the file as it was.
func TestPidfileRefusesWhatIsNotAPidfile(t *testing.T) {
	dir := t.TempDir()
	precious := filepath.Join(dir, "precious")
	const content = "root:x:0:0:root:/root:/bin/bash\n"
	if err := os.WriteFile(precious, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, path, want string) {
		t.Helper()
		p, err := lockPidfile(path)
		if err == nil {
			p.remove()
			t.Fatalf("lockPidfile(%s) accepted it", path)
		}
		msg := err.Error()
		if !strings.Contains(msg, path) || !strings.Contains(msg, "(-i)") || !strings.Contains(msg, want) {
			t.Errorf("error %q; want it to name %s, -i and %q", msg, path, want)
		}
		if b, _ := os.ReadFile(precious); string(b) != content {
			t.Errorf("the target file now holds %q", b)
		}
	}

	t.Run("symlink to a file", func(t *testing.T) {
		link := filepath.Join(dir, "link.pid")
		if err := os.Symlink(precious, link); err != nil {
			t.Fatal(err)
		}
		check(t, link, "symbolic link")
		if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("the symlink is gone or changed: %v %v", fi, err)
		}
	})
	t.Run("dangling symlink", func(t *testing.T) {
		link := filepath.Join(dir, "dangling.pid")
		target := filepath.Join(dir, "would-be-created")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		check(t, link, "symbolic link")
		if _, err := os.Lstat(target); !os.IsNotExist(err) {
			t.Errorf("following the dangling symlink created %s", target)
		}
	})
	t.Run("regular file with other content", func(t *testing.T) {
		check(t, precious, "content is not a pid")
	})
	t.Run("pid followed by more text", func(t *testing.T) {
		other := filepath.Join(dir, "other")
		if err := os.WriteFile(other, []byte("123\nsomething else\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		check(t, other, "content is not a pid")
		if b, _ := os.ReadFile(other); string(b) != "123\nsomething else\n" {
			t.Errorf("the file now holds %q", b)
		}
	})
	t.Run("large file", func(t *testing.T) {
		big := filepath.Join(dir, "big")
		digits := strings.Repeat("1", 4096)
		if err := os.WriteFile(big, []byte(digits), 0o644); err != nil {
			t.Fatal(err)
		}
		check(t, big, "content is not a pid")
		if fi, _ := os.Stat(big); fi.Size() != 4096 {
			t.Errorf("the file was truncated to %d bytes", fi.Size())
		}
	})
	t.Run("hard link", func(t *testing.T) {
		pidLike := filepath.Join(dir, "pidlike")
		if err := os.WriteFile(pidLike, []byte("1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, "hard.pid")
		if err := os.Link(pidLike, link); err != nil {
			t.Fatal(err)
		}
		check(t, link, "2 hard links")
	})
	t.Run("directory", func(t *testing.T) {
		sub := filepath.Join(dir, "sub")
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		check(t, sub, "a directory")
	})
	t.Run("FIFO", func(t *testing.T) {
		fifo := filepath.Join(dir, "fifo")
		if err := syscall.Mkfifo(fifo, 0o644); err != nil {
			t.Fatal(err)
		}
		check(t, fifo, "a FIFO")
	})
}

// remove deletes only the file it locked: a path replaced meanwhile is
// someone else's.
func TestPidfileRemoveSparesAReplacedPath(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vknetd.pid")
	p, err := lockPidfile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, filepath.Join(dir, "moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("other\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.remove()
	if b, err := os.ReadFile(path); err != nil || string(b) != "other\n" {
		t.Errorf("remove deleted or changed the file that replaced the pidfile: %q %v", b, err)
	}
}
