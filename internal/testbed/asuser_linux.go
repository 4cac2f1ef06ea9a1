package testbed

import (
	"fmt"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// User is an unprivileged identity for a test's clients: numeric ids need
// no /etc/passwd entry. Groups are its supplementary groups (the socket's
// group, to be let in).
type User struct {
	UID, GID int
	Groups   []int
}

// AsUser runs fn on a thread of its own whose effective uid, gid and
// groups are u's, so that what fn does is done by u: the kernel records
// the caller's credentials when a unix socket connects (SO_PEERCRED) and
// checks u's rights on the socket file. Linux credentials belong to the
// thread, and the raw syscalls change this thread's only; the thread is
// never handed back to the runtime (fn's goroutine ends locked to it), so
// no other goroutine ever runs as u. The test process must be root.
func AsUser(t testing.TB, u User, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		done <- asUser(u, fn)
	}()
	return <-done
}

func asUser(u User, fn func() error) error {
	gids := make([]uint32, len(u.Groups))
	for i, g := range u.Groups {
		gids[i] = uint32(g)
	}
	var groups unsafe.Pointer
	if len(gids) > 0 {
		groups = unsafe.Pointer(&gids[0])
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gids)), uintptr(groups), 0); e != 0 {
		return fmt.Errorf("setgroups %v: %w", u.Groups, e)
	}
	// Effective ids only: the real and saved ids stay root's, which is
	// what lets the thread be checked, and would let it change back.
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), uintptr(u.GID), ^uintptr(0)); e != 0 {
		return fmt.Errorf("setresgid %d: %w", u.GID, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(u.UID), ^uintptr(0)); e != 0 {
		return fmt.Errorf("setresuid %d: %w", u.UID, e)
	}
	return fn()
}

// DialSeqpacketAs is DialSeqpacket by user u.
func DialSeqpacketAs(t testing.TB, path string, u User) *SeqpacketClient {
	t.Helper()
	var c *SeqpacketClient
	var dialErr error
	if err := AsUser(t, u, func() error {
		c, dialErr = dialSeqpacket(path)
		return nil
	}); err != nil {
		t.Fatalf("becoming uid %d to connect: %v", u.UID, err)
	}
	if dialErr != nil {
		t.Fatalf("connecting to %s as uid %d: %v", path, u.UID, dialErr)
	}
	t.Cleanup(c.Close)
	return c
}
