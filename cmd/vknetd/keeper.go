package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/tap"
)

// The keeper removes the daemon's files once it is gone. After --user the
// daemon may no longer unlink its sockets and pidfile: they sit in a
// directory of root's (/run). So before giving up root the daemon starts
// a copy of itself in keeper mode, which stays root but takes no input
// from anyone: it holds the read end of a pipe whose only write end is
// the daemon's, waits for end-of-file (the daemon exited, however: SIGKILL
// included), and then deletes each network device the daemon created (the
// bridge and VXLAN device of --vxlan) that still carries the daemon's mark
// at the same index, and unlinks each file whose directory entry still
// names the inode the daemon created. It has the directories open from the
// start, so no path is resolved again at the end, and it holds the
// pidfile's lock (the same open file) until the pidfile is gone.

// keeperEnv selects keeper mode; its value says where the keeper logs
// ("stderr" or "syslog").
const keeperEnv = "VKNETD_KEEPER"

// Descriptors the keeper finds open.
const (
	keeperAliveFd = 3 // read end of the daemon's pipe
	keeperLockFd  = 4 // the pidfile, holding its flock
	keeperDirFd0  = 5 // one directory per kept file, in argument order
)

// keptFile is a file the keeper removes if it is still the same inode.
type keptFile struct {
	path     string
	dev, ino uint64
}

// keeper is the daemon's side of it.
type keeper struct {
	cmd    *exec.Cmd
	alive  *os.File // closing it (or dying) tells the keeper to clean up
	exited chan error
	// adoptedPid is the keeper's pid when a previous daemon started it
	// (vknetctl upgrade); cmd is nil then.
	adoptedPid int
}

// keeperPidOwnerEnv is the uid (--user's) whose processes the keeper
// accepts as the daemon's new pid after an upgrade ("pid N" lines on its
// pipe): it writes that pid into the pidfile, which the daemon may no
// longer write itself.
const keeperPidOwnerEnv = "VKNETD_KEEPER_PID_OWNER"

func (k *keeper) pid() int {
	if k.cmd != nil {
		return k.cmd.Process.Pid
	}
	return k.adoptedPid
}

// keptLinkTag starts a device's entry among the keeper's arguments.
const keptLinkTag = "link"

// startKeeper starts the keeper and waits until it is ready (its signals
// ignored), so that no file or device is left unwatched once the daemon
// gives up root. links are the devices the daemon created (tap.Created).
func startKeeper(files []keptFile, links []tap.Created, lock *os.File, logTo string, pidOwner int) (_ *keeper, err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("--user: cannot find my own executable to start the keeper: %w", err)
	}
	aliveR, aliveW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("--user: keeper pipe: %w", err)
	}
	defer aliveR.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		aliveW.Close()
		return nil, fmt.Errorf("--user: keeper pipe: %w", err)
	}
	defer readyR.Close()
	defer readyW.Close()

	extra := []*os.File{aliveR, lock}
	args := []string{"vknetd-keeper"}
	for _, l := range links {
		args = append(args, keptLinkTag, strconv.Itoa(l.Index), l.Name, l.Mark)
	}
	for _, f := range files {
		dir, err := os.Open(filepath.Dir(f.path))
		if err != nil {
			aliveW.Close()
			return nil, fmt.Errorf("--user: keeper: opening the directory of %s: %w", f.path, err)
		}
		defer dir.Close()
		args = append(args, strconv.Itoa(keeperDirFd0+len(extra)-2), strconv.FormatUint(f.dev, 10),
			strconv.FormatUint(f.ino, 10), filepath.Base(f.path))
		extra = append(extra, dir)
	}
	cmd := &exec.Cmd{Path: exe, Args: args, Dir: "/"}
	cmd.Env = append(os.Environ(), keeperEnv+"="+logTo, keeperPidOwnerEnv+"="+strconv.Itoa(pidOwner))
	cmd.Stdout, cmd.Stderr = readyW, os.Stderr
	cmd.ExtraFiles = extra
	if err := cmd.Start(); err != nil {
		aliveW.Close()
		return nil, fmt.Errorf("--user: starting the keeper: %w", err)
	}
	k := &keeper{cmd: cmd, alive: aliveW, exited: make(chan error, 1)}
	go func() { k.exited <- cmd.Wait() }()
	readyW.Close()
	readyR.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, rerr := bufio.NewReader(readyR).ReadString('\n')
	if rerr != nil || line != "ready\n" {
		k.alive.Close()
		k.wait()
		return nil, fmt.Errorf("--user: the keeper did not start (%q, %v)", line, rerr)
	}
	return k, nil
}

// release tells the keeper to remove the files now and waits for it, so
// that they are gone when the daemon has exited.
func (k *keeper) release(log *slog.Logger) {
	if k == nil || k.alive == nil {
		return
	}
	k.alive.Close()
	k.alive = nil
	if err := k.wait(); err != nil {
		log.Error("the keeper failed to remove the daemon's files", "err", err)
	}
}

func (k *keeper) wait() error {
	select {
	case err := <-k.exited:
		if err != nil {
			return fmt.Errorf("keeper: %s", describeExit(err))
		}
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("keeper (pid %d) still running after 5s", k.pid())
	}
}

// runKeeper is the keeper process: args are quadruples, a created device
// as "link ifindex name mark" or a kept file as "dirfd dev ino name".
func runKeeper(args []string, stdout, stderr io.Writer, logTo string) int {
	// Stop signals for the daemon (systemd's to the whole cgroup, ^C to the
	// process group) must not stop the keeper before its work.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE)
	log := stderrLogger(stderr)
	if logTo == "syslog" {
		if l, err := syslogLogger(); err == nil {
			log = l
		}
	}
	links, files, err := parseKept(args)
	if err != nil {
		log.Error("keeper: bad arguments", "err", err)
		return 2
	}
	fmt.Fprintln(stdout, "ready")
	if c, ok := stdout.(io.Closer); ok {
		c.Close()
	}
	alive := os.NewFile(keeperAliveFd, "daemon")
	// The daemon may write; only a "pid N" line means anything (an
	// upgraded daemon's pid, for the pidfile), and only for a process of
	// the --user the keeper was told, so the worst a daemon can do is
	// name another process of its own user. Lines are read into a fixed
	// buffer: a longer one is skipped.
	pidOwner, perr := strconv.Atoi(os.Getenv(keeperPidOwnerEnv))
	if perr != nil || pidOwner <= 0 {
		pidOwner = -1
	}
	lines := bufio.NewReaderSize(alive, 64)
	for {
		line, err := lines.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			break
		}
		if err := writeNewPid(os.NewFile(keeperLockFd, "pidfile"), string(line), pidOwner); err != nil {
			log.Warn("keeper: not writing the pidfile", "err", err)
		}
	}
	status := 0
	// Devices first, in the reverse of their creation: the pidfile, whose
	// lock keeps a new daemon from starting, goes last.
	for i := len(links) - 1; i >= 0; i-- {
		if err := tap.RemoveCreated(links[i]); err != nil {
			log.Error("keeper: removing the daemon's device", "device", links[i].Name, "err", err)
			status = 1
		}
	}
	for _, f := range files {
		if err := unlinkIfSame(f.dirfd, f.name, f.dev, f.ino); err != nil {
			log.Error("keeper: removing the daemon's file", "name", f.name, "err", err)
			status = 1
		}
	}
	return status
}

type keptEntry struct {
	dirfd    int
	dev, ino uint64
	name     string
}

func parseKept(args []string) ([]tap.Created, []keptEntry, error) {
	if len(args)%4 != 0 {
		return nil, nil, fmt.Errorf("%d arguments, want quadruples", len(args))
	}
	var links []tap.Created
	var files []keptEntry
	for i := 0; i < len(args); i += 4 {
		if args[i] == keptLinkTag {
			index, err := strconv.Atoi(args[i+1])
			if err != nil || index < 1 || args[i+2] == "" || args[i+3] == "" {
				return nil, nil, fmt.Errorf("bad device entry %q", args[i:i+4])
			}
			links = append(links, tap.Created{Index: index, Name: args[i+2], Mark: args[i+3]})
			continue
		}
		fd, err1 := strconv.Atoi(args[i])
		dev, err2 := strconv.ParseUint(args[i+1], 10, 64)
		ino, err3 := strconv.ParseUint(args[i+2], 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, nil, err
		}
		if fd < keeperDirFd0 || args[i+3] == "" || filepath.Base(args[i+3]) != args[i+3] {
			return nil, nil, fmt.Errorf("bad entry %q", args[i:i+4])
		}
		files = append(files, keptEntry{dirfd: fd, dev: dev, ino: ino, name: args[i+3]})
	}
	return links, files, nil
}

// unlinkIfSame removes name from the directory dirfd if it is still the
// inode dev/ino; gone already is fine.
func unlinkIfSame(dirfd int, name string, dev, ino uint64) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	if uint64(st.Dev) != dev || uint64(st.Ino) != ino {
		return nil // replaced by someone else's file: theirs
	}
	return unix.Unlinkat(dirfd, name, 0)
}

// writeNewPid writes the pid of a "pid N" line into the pidfile if N is
// a process of owner.
func writeNewPid(pidfile *os.File, line string, owner int) error {
	rest, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "pid ")
	pid, err := strconv.Atoi(rest)
	if !ok || err != nil || pid <= 0 {
		return fmt.Errorf("unexpected line %q", line)
	}
	if owner < 0 {
		return errors.New("no --user to check the new daemon against")
	}
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(string(status), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "Uid:" {
			if f[1] != strconv.Itoa(owner) || f[2] != strconv.Itoa(owner) {
				return fmt.Errorf("pid %d is uid %s, not the daemon's %d", pid, f[1], owner)
			}
			if err := pidfile.Truncate(0); err != nil {
				return err
			}
			_, err := pidfile.WriteAt([]byte(strconv.Itoa(pid)+"\n"), 0)
			return err
		}
	}
	return fmt.Errorf("pid %d: no Uid line", pid)
}
