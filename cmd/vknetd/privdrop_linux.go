package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Giving up root (--user) in a Go program. Credentials are per thread on
// Linux and the runtime runs goroutines on several threads, so every
// change must reach every thread:
//   - setgroups/setresgid/setresuid in package syscall already do so (with
//     cgo through glibc, without it through AllThreadsSyscall);
//   - capabilities (capset) and PR_SET_KEEPCAPS have no such wrapper:
//     they go through syscall.AllThreadsSyscall, which exists only in a
//     binary without cgo (CGO_ENABLED=0; make build and the tests' build
//     do that). A cgo binary is refused up front: a half-dropped daemon,
//     CAP_NET_ADMIN on one thread and every capability on others, would
//     be worse than an honest root one.
//
// The result, checked on every thread afterwards: uid and gid of the
// user, CAP_NET_ADMIN (to take down the TAP and bridge at exit) effective
// and permitted and nothing else, no ambient or inheritable capability,
// and no_new_privs so no exec can bring any back.

// keptCaps is what the daemon keeps after the drop.
const keptCaps = 1 << unix.CAP_NET_ADMIN

// checkCanDrop tells, before anything is created, whether --user can be
// honoured by this process.
func checkCanDrop() error {
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Errorf("--user needs vknetd to be started as root (it runs as uid %d): start it as root, or leave --user out", uid)
	}
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_GET_KEEPCAPS, 0, 0); e != 0 {
		if e == syscall.ENOTSUP {
			return errors.New("--user: this vknetd binary links cgo, so it cannot drop capabilities on all its threads: build it with CGO_ENABLED=0 (make build does), or leave --user out")
		}
		return fmt.Errorf("--user: prctl on all threads: %w", e)
	}
	return nil
}

// dropPrivileges makes every thread of the process r, keeping only
// CAP_NET_ADMIN. It returns a description of the result for the log.
func dropPrivileges(r *runAs) (string, error) {
	allThreads := func(what string, trap, a1, a2, a3 uintptr) error {
		if _, _, e := syscall.AllThreadsSyscall(trap, a1, a2, a3); e != 0 {
			return fmt.Errorf("--user %s: %s: %w", r.name, what, e)
		}
		return nil
	}
	// Keep the permitted set across setresuid, which would clear it.
	if err := allThreads("keep capabilities", unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1, 0); err != nil {
		return "", err
	}
	if err := syscall.Setgroups(r.groups); err != nil {
		return "", fmt.Errorf("--user %s: setgroups %v: %w", r.name, r.groups, err)
	}
	if err := syscall.Setresgid(r.gid, r.gid, r.gid); err != nil {
		return "", fmt.Errorf("--user %s: setresgid %d: %w", r.name, r.gid, err)
	}
	if err := syscall.Setresuid(r.uid, r.uid, r.uid); err != nil {
		return "", fmt.Errorf("--user %s: setresuid %d: %w", r.name, r.uid, err)
	}
	// Heap-allocated: capset reads them on every thread.
	hdr := &unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := &[2]unix.CapUserData{{Effective: keptCaps, Permitted: keptCaps}}
	if err := allThreads("capset to CAP_NET_ADMIN", unix.SYS_CAPSET, uintptr(unsafe.Pointer(hdr)), uintptr(unsafe.Pointer(&data[0])), 0); err != nil {
		return "", err
	}
	if err := allThreads("clear keep-capabilities", unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 0, 0); err != nil {
		return "", err
	}
	if err := allThreads("no_new_privs", unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); err != nil {
		return "", err
	}
	return verifyDropped(r)
}

// verifyDropped reads back what every thread holds: the drop is trusted
// only when the kernel says so.
func verifyDropped(r *runAs) (string, error) {
	tasks, err := filepath.Glob("/proc/self/task/*/status")
	if err != nil || len(tasks) == 0 {
		return "", fmt.Errorf("--user %s: cannot read /proc/self/task to check the drop: %v", r.name, err)
	}
	want := map[string]string{
		"Uid":        fmt.Sprintf("%d\t%d\t%d\t%d", r.uid, r.uid, r.uid, r.uid),
		"Gid":        fmt.Sprintf("%d\t%d\t%d\t%d", r.gid, r.gid, r.gid, r.gid),
		"CapEff":     fmt.Sprintf("%016x", keptCaps),
		"CapPrm":     fmt.Sprintf("%016x", keptCaps),
		"CapInh":     fmt.Sprintf("%016x", 0),
		"CapAmb":     fmt.Sprintf("%016x", 0),
		"NoNewPrivs": "1",
	}
	for _, path := range tasks {
		b, err := os.ReadFile(path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // a thread that just exited
			}
			return "", fmt.Errorf("--user %s: checking the drop: %w", r.name, err)
		}
		got := statusFields(string(b))
		for k, v := range want {
			if got[k] != v {
				return "", fmt.Errorf("--user %s: thread %s still has %s %q after the drop, want %q", r.name, filepath.Base(filepath.Dir(path)), k, got[k], v)
			}
		}
	}
	return "cap_net_admin", nil
}

func statusFields(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}
