package testbed

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// DaemonReadyTimeout is how long StartDaemon waits by default for vknetd to print its
// TAP's name.
const DaemonReadyTimeout = 10 * time.Second

// DaemonConfig says how to run vknetd -d. The zero value is a daemon with its socket
// and pidfile in a fresh ShortTempDir, never /var/run, and --group root, so that a
// machine without a vknet group runs the tests.
type DaemonConfig struct {
	Sock    string        // -p; default <ShortTempDir>/vknet
	Pidfile string        // -i; default <ShortTempDir>/vknetd.pid
	Group   string        // --group; default root
	Args    []string      // every other flag, and the address/cidrbits
	Wrap    []string      // a command vknetd runs under, e.g. prlimit --nofile=20:20
	Ready   time.Duration // how long to wait for the TAP's name; default DaemonReadyTimeout
}

// WorkersEnv names the environment variable that runs every daemon the
// tests start with --workers of its value (unless the test gives
// --workers itself): CI runs the integration suite once with the default
// and again with VKNETD_TEST_WORKERS=2.
const WorkersEnv = "VKNETD_TEST_WORKERS"

// workersArgs is --workers from WorkersEnv, for a daemon whose args do not
// say.
func workersArgs(args []string) []string {
	w := os.Getenv(WorkersEnv)
	if w == "" || slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--workers") }) {
		return nil
	}
	return []string{"--workers", w}
}

// Daemon is vknetd running in the foreground (-d) in a namespace, started with
// StartSplit: its stdout (the TAP's name) and stderr (its log) are apart.
type Daemon struct {
	*Proc
	Netns   *Netns
	Sock    string
	Pidfile string
	TAP     string // the name it printed
}

// StartError is a daemon that exited instead of printing its TAP's name.
type StartError struct {
	Code   int // exit status; -1 when a signal killed it
	Stderr string
}

func (e *StartError) Error() string {
	return fmt.Sprintf("vknetd exited with status %d before it was ready; stderr:\n%s", e.Code, e.Stderr)
}

// StartDaemon runs bin (a vknetd built by BuildVknetd) with -d in the namespace and
// waits until it is ready, which in -d mode it says by printing its TAP's name alone
// on stdout. It fails the test if the daemon exits or stays silent instead. The daemon
// is stopped at cleanup like any Proc.
func (n *Netns) StartDaemon(t testing.TB, bin string, c DaemonConfig) *Daemon {
	t.Helper()
	d, err := n.TryStartDaemon(t, bin, c)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TryStartDaemon is StartDaemon for tests that expect the start to fail: a daemon
// that exits first is a *StartError, with its exit status and stderr.
func (n *Netns) TryStartDaemon(t testing.TB, bin string, c DaemonConfig) (*Daemon, error) {
	t.Helper()
	if c.Sock == "" || c.Pidfile == "" {
		dir := ShortTempDir(t)
		if c.Sock == "" {
			c.Sock = filepath.Join(dir, "vknet")
		}
		if c.Pidfile == "" {
			c.Pidfile = filepath.Join(dir, "vknetd.pid")
		}
	}
	if c.Group == "" {
		c.Group = "root"
	}
	if c.Ready == 0 {
		c.Ready = DaemonReadyTimeout
	}
	args := append([]string(nil), c.Wrap...)
	args = append(args, bin, "-d", "-p", c.Sock, "-i", c.Pidfile, "--group", c.Group)
	args = append(args, workersArgs(c.Args)...)
	args = append(args, c.Args...)
	d := &Daemon{Proc: n.StartSplit(t, args...), Netns: n, Sock: c.Sock, Pidfile: c.Pidfile}

	ready := func() bool {
		line, _, found := strings.Cut(d.Stdout(), "\n")
		d.TAP = strings.TrimSpace(line)
		return found
	}
	deadline := time.After(c.Ready)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !ready() {
		select {
		case <-d.Done():
			// What it printed before exiting still counts: the test judges the exit.
			if ready() {
				return d, nil
			}
			return nil, &StartError{Code: d.ExitCode(), Stderr: d.Stderr()}
		case <-deadline:
			return nil, fmt.Errorf("vknetd %s printed no TAP name within %v; stderr:\n%s", strings.Join(c.Args, " "), c.Ready, d.Stderr())
		case <-tick.C:
		}
	}
	// The daemon logs its start-up line before it prints the TAP's name,
	// but stdout and stderr are two pipes: wait for the line too, so a test
	// reading the log at once finds it.
	for !strings.Contains(d.Stderr(), startedLine) {
		select {
		case <-d.Done():
			return d, nil
		case <-deadline:
			return d, nil
		case <-tick.C:
		}
	}
	return d, nil
}

// startedLine is in the log line vknetd writes once it is up.
const startedLine = `msg="vknetd started"`
