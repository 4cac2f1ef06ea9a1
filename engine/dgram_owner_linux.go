package engine

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// A datagram client is answered only on the socket it owns. Its address is
// a path, looked up once, when its first datagram arrives, without
// following any symlink (in any component) and checked: a socket, owned by
// the user the kernel says sent the datagram (SCM_CREDENTIALS). The switch
// keeps that lookup as an O_PATH fd for the client's life and reaches the
// socket only through /proc/self/fd/N of it, which names that inode and no
// other, whatever is renamed or replaced at the path afterwards. Without
// this the daemon, as root, delivered to whatever the path named at each
// send: a client could point it at any socket on the host.

// enableSenderCredentials makes every datagram read from the listener fd
// carry its sender's pid, uid and gid, as the kernel knows them.
func enableSenderCredentials(fd int) error {
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
}

// openClientSocket looks up the client's socket file at path, once, for
// the client whose datagram came from uid, and returns an O_PATH fd of it
// with its device and inode.
func openClientSocket(path string, uid int32) (fd int, dev, ino uint64, err error) {
	if len(path) == 0 || path[0] != '/' {
		return -1, 0, 0, &clientRefused{reason: "its socket is bound to a relative path",
			hint: "bind an absolute path (QEMU: local.path=/run/..., not a name relative to QEMU's directory)"}
	}
	// No O_NOFOLLOW: with O_PATH it would open a trailing symlink itself
	// rather than fail with ELOOP, which says what is wrong.
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err = unix.Openat2(unix.AT_FDCWD, path, &how)
	for try := 0; err == unix.EINTR && try < 3; try++ { // bounded: the loop must not hang on a client
		fd, err = unix.Openat2(unix.AT_FDCWD, path, &how)
	}
	if err != nil {
		return -1, 0, 0, openRefusal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, 0, 0, &clientRefused{reason: "cannot stat its socket", err: err}
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFSOCK:
		unix.Close(fd)
		return -1, 0, 0, &clientRefused{reason: fmt.Sprintf("its path names a file that is not a socket (mode %#o)", st.Mode)}
	case uid < 0:
		unix.Close(fd)
		return -1, 0, 0, &clientRefused{reason: "the kernel gave no sender credentials with its datagram"}
	case uid != 0 && st.Uid != uint32(uid):
		unix.Close(fd)
		return -1, 0, 0, &clientRefused{
			reason: fmt.Sprintf("its socket file is owned by uid %d, not by the sender (uid %d)", st.Uid, uid),
			hint:   "a client may only name a socket it owns: bind the socket as the user that runs the VM"}
	}
	return fd, uint64(st.Dev), uint64(st.Ino), nil
}

func openRefusal(err error) error {
	switch err {
	case unix.ELOOP:
		return &clientRefused{reason: "its socket path or a directory on it is a symlink", err: err,
			hint: "give the real path (e.g. /run, not /var/run): the switch follows no symlink for a client"}
	case unix.EACCES:
		return &clientRefused{reason: "the daemon cannot reach its socket path", err: err,
			hint: fmt.Sprintf("every directory on the path must be searchable by the daemon (uid %d); put the socket in a directory it can reach", os.Geteuid())}
	case unix.ENOENT, unix.ENOTDIR:
		return &clientRefused{reason: "its socket path does not exist as the daemon sees it", err: err,
			hint: "the client's socket may be gone, or the daemon has a private /tmp (systemd PrivateTmp=): bind it elsewhere, e.g. under /run"}
	case unix.ENOSYS:
		return &clientRefused{reason: "this kernel has no openat2", err: err,
			hint: "datagram clients need Linux 5.6 or later; use --stream or the SEQPACKET socket"}
	}
	return &clientRefused{reason: "cannot open its socket path", err: err}
}

// fdPath is the name that reaches exactly the file an O_PATH fd holds.
func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// clientAddr is the address for sending to the client's socket: its O_PATH
// fd's /proc name for a path, the name itself for an abstract address.
// An abstract name has no owner to check and is looked up when the switch
// connects, once: a client that released its name between sending and that
// moment (while its datagram waited in the listener's queue) leaves the
// name to whoever binds it next. The kernel reports no peer credentials on
// a connected datagram socket to check it against; later datagrams from
// another user under the name are dropped all the same (sameSender).
func clientAddr(d *dgramState) *unix.SockaddrUnix {
	if d.pathFd >= 0 {
		return &unix.SockaddrUnix{Name: fdPath(d.pathFd)}
	}
	return &unix.SockaddrUnix{Name: d.key} // a leading NUL: abstract, NULs inside kept
}

// setViaAddr prepares the address written on every datagram sent to the
// client through the listener: never its path, only its O_PATH fd.
func setViaAddr(d *dgramState) error {
	if d.pathFd < 0 {
		// An abstract name has no inode to hold: sent through the listener
		// it would be looked up again on every send, and reach whoever
		// holds the name by then.
		return &clientRefused{reason: "it has an abstract address and connected its socket to the listener",
			hint: "bind the client's socket to a path it owns instead of an abstract name"}
	}
	name := fdPath(d.pathFd)
	d.addr = unix.RawSockaddrUnix{Family: unix.AF_UNIX}
	for i := 0; i < len(name); i++ {
		d.addr.Path[i] = int8(name[i])
	}
	d.addrLen = 2 + len(name) + 1
	return nil
}

// samePathSocket reports whether path still names the socket file the
// client registered with; false when it is gone or replaced.
func samePathSocket(d *dgramState) bool {
	fd, dev, ino, err := openClientSocket(d.key, 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return dev == d.dev && ino == d.ino
}
