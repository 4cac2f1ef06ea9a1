package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Going to the background: Go cannot fork a running runtime, so the command
// the user ran re-executes itself detached (new session, no terminal) and
// waits on a pipe until the daemon reports "ready TAPNAME" or "error MSG".
// Only then does it print the TAP name and exit 0, or print the daemon's
// own error and exit 1: a script never sees success for a daemon that is
// not up.

const readyFdEnv = "VKNETD_READY_FD"

// readiness is how a starting daemon reports to whoever waits for it.
type readiness struct {
	w *os.File // nil in -d mode
}

func childReadiness() (*readiness, bool) {
	if os.Getenv(readyFdEnv) != "3" {
		return &readiness{}, false
	}
	os.Unsetenv(readyFdEnv)
	return &readiness{w: os.NewFile(3, "readiness")}, true
}

func (r *readiness) warn(msg string) {
	if r.w != nil {
		fmt.Fprintf(r.w, "warning %s\n", oneLine(msg))
	}
}

func (r *readiness) ready(tapName string) {
	if r.w != nil {
		fmt.Fprintf(r.w, "ready %s\n", tapName)
		r.w.Close()
		r.w = nil
	}
}

func (r *readiness) fail(err error) {
	if r.w != nil {
		fmt.Fprintf(r.w, "error %s\n", oneLine(err.Error()))
		r.w.Close()
		r.w = nil
	}
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }

// startBackground re-executes vknetd detached and relays its verdict.
func startBackground(stdout, stderr io.Writer) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "vknetd: cannot find my own executable to go to the background: %v (use -d to stay in the foreground)\n", err)
		return 1
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "vknetd: %v\n", err)
		return 1
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintf(stderr, "vknetd: %v\n", err)
		return 1
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), readyFdEnv+"=3")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
	cmd.ExtraFiles = []*os.File{w}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "vknetd: starting the background daemon: %v\n", err)
		return 1
	}
	w.Close()
	devnull.Close()

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	sc := bufio.NewScanner(r)
	for sc.Scan() {
		verb, rest, _ := strings.Cut(sc.Text(), " ")
		switch verb {
		case "warning":
			fmt.Fprintf(stderr, "vknetd: warning: %s\n", rest)
		case "ready":
			fmt.Fprintln(stdout, rest)
			return 0
		case "error":
			fmt.Fprintf(stderr, "vknetd: %s\n", rest)
			waitBriefly(exited)
			return 1
		}
	}
	// The pipe closed without a verdict: the daemon died before it could
	// tell us why (a crash, or killed).
	select {
	case err := <-exited:
		fmt.Fprintf(stderr, "vknetd: the background daemon exited before it was ready: %v\n", describeExit(err))
	case <-time.After(5 * time.Second):
		fmt.Fprintf(stderr, "vknetd: the background daemon closed its status pipe without reporting (pid %d)\n", cmd.Process.Pid)
	}
	return 1
}

func waitBriefly(exited <-chan error) {
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
	}
}

func describeExit(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ProcessState.String()
	}
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
