package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// pidfile is a pidfile held with an exclusive flock for the daemon's life,
// so a second daemon given the same -i refuses to start instead of
// overwriting it (the original did not lock).
//
// vknetd runs as root, so -i must never be a way to write to, truncate or
// delete some other file: a path that exists is taken only when it is a
// pidfile, that is a regular file with one link holding a pid or nothing.
// An empty file counts as a pidfile: it is what a daemon killed between
// creating and writing it leaves, and what `touch` or a tmpfiles.d entry
// prepares.
type pidfile struct {
	path     string
	f        *os.File
	dev, ino uint64 // of the file we locked: remove deletes only that one
}

// maxPidfileSize is more than any pid with its newline; a longer file was
// never written by a daemon.
const maxPidfileSize = 32

func lockPidfile(path string) (*pidfile, error) {
	// Refuse what is plainly not a pidfile before opening it: opening a
	// device or a FIFO can have effects of its own.
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, notPidfile(path, describeMode(fi.Mode()))
	}
	// O_NOFOLLOW: a symlink put at path is refused (ELOOP), never followed
	// to the file it names, even if it was swapped in after the Lstat.
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o644)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, notPidfile(path, "a symbolic link")
		}
		return nil, fmt.Errorf("pidfile %s (-i): %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	p, err := checkLockWrite(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return p, nil
}

// checkLockWrite judges the file actually opened (not the path, which
// may have changed since), locks it, and only then replaces its content.
func checkLockWrite(f *os.File, path string) (*pidfile, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("pidfile %s (-i): %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, notPidfile(path, "not a regular file")
	}
	if st.Nlink != 1 {
		return nil, notPidfile(path, fmt.Sprintf("a file with %d hard links", st.Nlink))
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			holder := ""
			if pid, ok := readPid(f); ok && pid > 0 {
				holder = fmt.Sprintf(" (pid %d)", pid)
			}
			return nil, fmt.Errorf("pidfile %s is locked by a running vknetd%s: stop it first, or give this one its own -i and -p", path, holder)
		}
		return nil, fmt.Errorf("locking pidfile %s (-i): %w", path, err)
	}
	if _, ok := readPid(f); !ok {
		return nil, notPidfile(path, "a file whose content is not a pid")
	}
	if err := f.Truncate(0); err != nil {
		return nil, fmt.Errorf("pidfile %s (-i): %w", path, err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		return nil, fmt.Errorf("pidfile %s (-i): %w", path, err)
	}
	return &pidfile{path: path, f: f, dev: uint64(st.Dev), ino: uint64(st.Ino)}, nil
}

// readPid reads the file from its start: ok when it is empty (pid 0) or
// holds one decimal pid and optional surrounding white space.
func readPid(f *os.File) (pid int, ok bool) {
	b := make([]byte, maxPidfileSize+1)
	n, err := f.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, false
	}
	if n > maxPidfileSize {
		return 0, false
	}
	s := strings.TrimSpace(string(b[:n]))
	if s == "" {
		return 0, true
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	pid, err = strconv.Atoi(s)
	return pid, err == nil && pid > 0
}

func notPidfile(path, what string) error {
	return fmt.Errorf("pidfile %s (-i) exists and is %s, not a pidfile: vknetd leaves it alone; give -i a path of its own (or remove it if it is really stale)", path, what)
}

func describeMode(m os.FileMode) string {
	switch {
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	case m.IsDir():
		return "a directory"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file"
}

// remove deletes the pidfile while still holding the lock, so no other
// daemon can have taken it over in between, and only if the path still
// names the file we locked. Without the right to (after --user), it is
// left to the keeper, which holds the same lock.
func (p *pidfile) remove() {
	if p == nil || p.f == nil {
		return
	}
	var st unix.Stat_t
	if err := unix.Lstat(p.path, &st); err == nil && uint64(st.Dev) == p.dev && uint64(st.Ino) == p.ino {
		os.Remove(p.path)
	}
	p.f.Close()
	p.f = nil
}
