package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// pidfile is a pidfile held with an exclusive flock for the daemon's life,
// so a second daemon given the same -i refuses to start instead of
// overwriting it (the original did not lock).
type pidfile struct {
	path string
	f    *os.File
}

func lockPidfile(path string) (*pidfile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pidfile %s (-i): %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := ""
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				holder = fmt.Sprintf(" (pid %d)", pid)
			}
		}
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("pidfile %s is locked by a running vknetd%s: stop it first, or give this one its own -i and -p", path, holder)
		}
		return nil, fmt.Errorf("locking pidfile %s (-i): %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("pidfile %s (-i): %w", path, err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("pidfile %s (-i): %w", path, err)
	}
	return &pidfile{path: path, f: f}, nil
}

// remove deletes the pidfile while still holding the lock, so no other
// daemon can have taken it over in between.
func (p *pidfile) remove() {
	if p == nil || p.f == nil {
		return
	}
	os.Remove(p.path)
	p.f.Close()
	p.f = nil
}
