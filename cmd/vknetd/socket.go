package main

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

const socketMode = 0o660

// lookupGroup resolves --group before anything is created, with the fix in
// the error: the original also required a vknet group.
func lookupGroup(name string) (int, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		if gid, nerr := strconv.Atoi(name); nerr == nil {
			return gid, nil
		}
		return 0, fmt.Errorf("group %q does not exist: create it with 'groupadd %s' and add the users who may connect VMs, or pick an existing group with --group", name, name)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("group %q has a non-numeric gid %q", name, g.Gid)
	}
	return gid, nil
}

// unixListener is a listening unix socket and the file it created.
type unixListener struct {
	fd   int
	path string
	dev  uint64
	ino  uint64
}

// listenUnix creates a listening unix socket of sotype at path, owned by
// group gid with mode 0660. A live daemon answering on path is never
// displaced; a stale socket file (nobody listening) is replaced; anything
// that is not a socket is left alone.
func listenUnix(path string, sotype int, gid int, flag string) (*unixListener, error) {
	if err := claimSocketPath(path, sotype, flag); err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_UNIX, sotype|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket for %s: %w", path, err)
	}
	// Bind with a umask that leaves the file no wider than 0600, then widen
	// it to the group: no moment exists where others could connect.
	old := syscall.Umask(0o177)
	err = unix.Bind(fd, &unix.SockaddrUnix{Name: path})
	syscall.Umask(old)
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("cannot create socket %s (%s): directory %s does not exist", path, flag, filepath.Dir(path))
		}
		return nil, fmt.Errorf("cannot create socket %s (%s): %w", path, flag, err)
	}
	l := &unixListener{fd: fd, path: path}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err == nil {
		l.dev, l.ino = uint64(st.Dev), uint64(st.Ino)
	}
	if err := os.Chown(path, -1, gid); err != nil {
		l.close()
		return nil, fmt.Errorf("socket %s: giving it to gid %d: %w", path, gid, err)
	}
	if err := os.Chmod(path, socketMode); err != nil {
		l.close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	if sotype == unix.SOCK_DGRAM {
		// No listen for datagrams. Every VM's frames queue here: give the
		// queue room (root may exceed net.core.rmem_max).
		setRcvbuf(fd, 4<<20)
		return l, nil
	}
	if err := unix.Listen(fd, 1024); err != nil {
		l.close()
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return l, nil
}

func claimSocketPath(path string, sotype int, flag string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket path %s (%s): %w", path, flag, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("socket path %s (%s) exists and is not a socket: remove it or choose another path", path, flag)
	}
	if socketIsLive(path, sotype) {
		return fmt.Errorf("another daemon is serving on %s (%s): stop it first, or give this one its own -p and -i", path, flag)
	}
	// Stale: its daemon died without cleaning up.
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing stale socket %s (%s): %w", path, flag, err)
	}
	return nil
}

// socketIsLive reports whether something accepts connections on path.
func socketIsLive(path string, sotype int) bool {
	// Non-blocking: a live listener with a full backlog must not hang us.
	fd, err := unix.Socket(unix.AF_UNIX, sotype|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if sotype == unix.SOCK_DGRAM {
		// A datagram socket has no listener to connect to; connect still
		// fails with ECONNREFUSED when nobody holds the name.
		return unix.Connect(fd, &unix.SockaddrUnix{Name: path}) == nil
	}
	err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
	// EPROTOTYPE: a live socket of another type; EAGAIN: a live listener
	// whose backlog is full. Both mean someone is there.
	return err == nil || errors.Is(err, unix.EPROTOTYPE) || errors.Is(err, unix.EAGAIN)
}

// close closes the listener and removes its file if it is still the one
// we created (a successor's socket at the same path is left alone).
func (l *unixListener) close() {
	if l == nil || l.fd < 0 {
		return
	}
	unix.Close(l.fd)
	l.fd = -1
	var st unix.Stat_t
	if err := unix.Lstat(l.path, &st); err == nil && uint64(st.Dev) == l.dev && uint64(st.Ino) == l.ino {
		os.Remove(l.path)
	}
}
