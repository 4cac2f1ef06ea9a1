package testbed

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeDaemon writes a shell script that stands in for vknetd, so that the tests of
// StartDaemon see exactly the arguments it passes and control what it prints.
func fakeDaemon(t *testing.T, script string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "vknetd")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestStartDaemon(t *testing.T) {
	n := NewNetns(t)
	bin := fakeDaemon(t, `echo "args: $* wrapped=$VKT_WRAPPED" >&2; sleep 0.1; echo vkt-tap7; exec sleep 600`)
	d := n.StartDaemon(t, bin, DaemonConfig{Args: []string{"-U"}, Wrap: []string{"env", "VKT_WRAPPED=yes"}})
	if d.TAP != "vkt-tap7" || d.Netns != n {
		t.Errorf("TAP %q, namespace %v; want vkt-tap7 in %s", d.TAP, d.Netns, n.Name)
	}
	if filepath.Dir(d.Sock) != filepath.Dir(d.Pidfile) || filepath.Base(d.Sock) != "vknet" || filepath.Base(d.Pidfile) != "vknetd.pid" {
		t.Errorf("default socket %s and pidfile %s are not vknet and vknetd.pid in one temporary directory", d.Sock, d.Pidfile)
	}
	want := "args: -d -p " + d.Sock + " -i " + d.Pidfile + " --group root -U wrapped=yes\n"
	if d.Stderr() != want {
		t.Errorf("the daemon got\n%q\nwant\n%q", d.Stderr(), want)
	}
	if d.Exited() {
		t.Error("StartDaemon's daemon has exited")
	}

	given := n.StartDaemon(t, bin, DaemonConfig{Sock: "/s", Pidfile: "/p", Group: "g"})
	if want := "args: -d -p /s -i /p --group g wrapped=\n"; given.Stderr() != want {
		t.Errorf("with socket, pidfile and group given the daemon got %q, want %q", given.Stderr(), want)
	}
}

func TestTryStartDaemonFailures(t *testing.T) {
	n := NewNetns(t)
	_, err := n.TryStartDaemon(t, fakeDaemon(t, `echo "vknetd: bad -x" >&2; exit 2`), DaemonConfig{})
	var se *StartError
	if !errors.As(err, &se) || se.Code != 2 || se.Stderr != "vknetd: bad -x\n" {
		t.Errorf("a daemon exiting 2: %v", err)
	}

	// Printing its TAP and exiting at once is still a start; the test judges the exit.
	d, err := n.TryStartDaemon(t, fakeDaemon(t, `echo vkt-tap8; exit 1`), DaemonConfig{})
	if err != nil || d.TAP != "vkt-tap8" {
		t.Errorf("a daemon that printed its TAP, then exited: %v, %+v", err, d)
	}

	_, err = n.TryStartDaemon(t, fakeDaemon(t, `echo starting >&2; exec sleep 600`), DaemonConfig{Args: []string{"-U"}, Ready: 200 * time.Millisecond})
	if err == nil || errors.As(err, &se) || !strings.Contains(err.Error(), "no TAP name within 200ms") || !strings.Contains(err.Error(), "starting") {
		t.Errorf("a silent daemon: %v", err)
	}

	msg := mustFail(t, func(tb testing.TB) {
		n.StartDaemon(tb, fakeDaemon(t, `echo "vknetd: no such group" >&2; exit 1`), DaemonConfig{})
	})
	if !strings.Contains(msg, "status 1") || !strings.Contains(msg, "no such group") {
		t.Errorf("StartDaemon's failure lacks the exit status or stderr: %s", msg)
	}
}

func TestWorkersFromEnvironment(t *testing.T) {
	t.Setenv(WorkersEnv, "")
	if got := workersArgs([]string{"-U"}); got != nil {
		t.Fatalf("without %s: %q", WorkersEnv, got)
	}
	t.Setenv(WorkersEnv, "2")
	if got := workersArgs([]string{"-U"}); !slices.Equal(got, []string{"--workers", "2"}) {
		t.Fatalf("with %s=2: %q", WorkersEnv, got)
	}
	if got := workersArgs([]string{"--workers", "3", "-U"}); got != nil {
		t.Fatalf("a test's own --workers was overridden: %q", got)
	}
}
