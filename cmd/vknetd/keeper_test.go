package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/tap"
)

// TestMain lets the test binary be its own keeper: startKeeper re-executes
// os.Executable(), which here is the test binary.
func TestMain(m *testing.M) {
	if logTo := os.Getenv(keeperEnv); logTo != "" {
		os.Exit(runKeeper(os.Args[1:], os.Stdout, os.Stderr, logTo))
	}
	os.Exit(m.Run())
}

func keptFileOf(t *testing.T, path string) keptFile {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return keptFile{path: path, dev: uint64(st.Dev), ino: uint64(st.Ino)}
}

// The keeper removes the daemon's files once told to, spares a file that
// replaced one of them, and holds the pidfile's lock until then.
func TestKeeperRemovesOnlyTheSameFiles(t *testing.T) {
	dir := t.TempDir()
	sock, replaced := filepath.Join(dir, "vknet"), filepath.Join(dir, "vknet.ctl")
	for _, p := range []string{sock, replaced} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pid, err := lockPidfile(filepath.Join(dir, "vknetd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	files := []keptFile{keptFileOf(t, sock), keptFileOf(t, replaced), {path: pid.path, dev: pid.dev, ino: pid.ino}}
	k, err := startKeeper(files, nil, pid.f, "stderr", -1)
	if err != nil {
		t.Fatal(err)
	}
	// Somebody else's file now at one of the paths (renamed over it, so
	// that it cannot reuse the inode number of the one it replaces).
	theirs := filepath.Join(dir, "theirs")
	if err := os.WriteFile(theirs, []byte("theirs"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(theirs, replaced); err != nil {
		t.Fatal(err)
	}
	// The daemon's own copy closed: the lock must stay with the keeper.
	pid.f.Close()
	pid.f = nil
	if _, err := lockPidfile(pid.path); err == nil {
		t.Errorf("the pidfile's lock was free while the keeper still held it")
	}
	if !fileExistsHere(sock) {
		t.Fatalf("the keeper removed %s before it was told to", sock)
	}

	k.release(stderrLogger(os.Stderr))
	if fileExistsHere(sock) || fileExistsHere(pid.path) {
		t.Errorf("after release: socket there %v, pidfile there %v; want both gone", fileExistsHere(sock), fileExistsHere(pid.path))
	}
	if b, err := os.ReadFile(replaced); err != nil || string(b) != "theirs" {
		t.Errorf("the keeper removed or changed the file that replaced the daemon's: %q %v", b, err)
	}
}

// A daemon killed outright closes the pipe as surely as one that exits:
// the keeper cleans up without being waited for.
func TestKeeperCleansUpWhenThePipeCloses(t *testing.T) {
	dir := t.TempDir()
	pid, err := lockPidfile(filepath.Join(dir, "vknetd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := startKeeper([]keptFile{{path: pid.path, dev: pid.dev, ino: pid.ino}}, nil, pid.f, "stderr", -1)
	if err != nil {
		t.Fatal(err)
	}
	pid.f.Close()
	k.alive.Close() // what the kernel does for a killed daemon
	deadline := time.Now().Add(5 * time.Second)
	for fileExistsHere(pid.path) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if fileExistsHere(pid.path) {
		t.Errorf("pidfile still there 5s after the keeper's pipe closed")
	}
	if err := k.wait(); err != nil {
		t.Error(err)
	}
}

func TestParseKeptRefusesPaths(t *testing.T) {
	for _, args := range [][]string{
		{"5", "1", "2"},
		{"5", "1", "2", "../etc/passwd"},
		{"5", "1", "2", "a/b"},
		{"5", "1", "2", ""},
		{"2", "1", "2", "x"},
		{"5", "x", "2", "x"},
		{"link", "0", "vkbr42", "vknetd:/run/vknetd.pid"},
		{"link", "x", "vkbr42", "vknetd:/run/vknetd.pid"},
		{"link", "7", "", "vknetd:/run/vknetd.pid"},
		{"link", "7", "vkbr42", ""},
	} {
		if _, _, err := parseKept(args); err == nil {
			t.Errorf("parseKept(%q) accepted it", args)
		}
	}
	links, got, err := parseKept([]string{"link", "7", "vkbr42", "vknetd:/run/vknetd.pid", "5", "1", "2", "vknet", "6", "3", "4", "vknetd.pid"})
	if err != nil || len(got) != 2 || got[1] != (keptEntry{dirfd: 6, dev: 3, ino: 4, name: "vknetd.pid"}) ||
		len(links) != 1 || links[0] != (tap.Created{Index: 7, Name: "vkbr42", Mark: "vknetd:/run/vknetd.pid"}) {
		t.Errorf("parseKept: %+v %+v %v", links, got, err)
	}
}

func fileExistsHere(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// The devices' mark names the pidfile, absolute, and always fits an
// interface alias.
func TestDeviceMark(t *testing.T) {
	if m := deviceMark("/run/vknetd.pid"); m != "vknetd:/run/vknetd.pid" {
		t.Errorf("deviceMark = %q", m)
	}
	long := "/" + strings.Repeat("d/", 200) + "vknetd.pid"
	m := deviceMark(long)
	if len(m) > tap.MaxMarkLen || !strings.HasPrefix(m, "vknetd:sha256:") || m == deviceMark(long+"x") {
		t.Errorf("deviceMark of a %d-byte path = %q", len(long), m)
	}
	if m := deviceMark("rel.pid"); !strings.HasPrefix(m, "vknetd:/") {
		t.Errorf("deviceMark of a relative path = %q, want it absolute", m)
	}
}
