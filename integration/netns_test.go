//go:build linux

package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var netnsSeq atomic.Int64

// newNetns creates a network namespace with a unique vkt-it-<pid>-<n> name
// and loopback up. t.Cleanup kills every process inside it, then deletes it.
func newNetns(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("vkt-it-%d-%d", os.Getpid(), netnsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { removeNetns(t, name) })
	ipRun(t, "-n", name, "link", "set", "lo", "up")
	return name
}

func removeNetns(t *testing.T, name string) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids := netnsPids(name)
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("processes %v still in namespace %s after SIGKILL", pids, name)
			break
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		t.Errorf("ip netns del %s: %v: %s", name, err, out)
	}
}

var ourNetns = regexp.MustCompile(`^vkt-it-(\d+)-\d+$`)

// reapStaleNetns removes namespaces left by test processes that were
// killed (go test -timeout) before their cleanups ran. A namespace whose
// creator is still alive belongs to a concurrent run and stays.
func reapStaleNetns() {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		m := ourNetns.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue
		}
		for _, p := range netnsPids(e.Name()) {
			syscall.Kill(p, syscall.SIGKILL)
		}
		if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "integration: removing stale namespace %s: %v: %s\n", e.Name(), err, out)
		} else {
			fmt.Fprintf(os.Stderr, "integration: removed namespace %s left by a killed test run\n", e.Name())
		}
	}
}

func netnsPids(name string) []int {
	out, err := exec.Command("ip", "netns", "pids", name).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ipRun runs ip(8) with args and fails t on error.
func ipRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// linkShow returns `ip -n ns -d link show name` and whether the link exists.
func linkShow(ns, name string) (string, bool) {
	out, err := exec.Command("ip", "-n", ns, "-d", "link", "show", name).CombinedOutput()
	return string(out), err == nil
}

// linkFlags returns the <...> flags of `ip link show` output.
func linkFlags(show string) []string {
	i := strings.IndexByte(show, '<')
	j := strings.IndexByte(show, '>')
	if i < 0 || j < i {
		return nil
	}
	return strings.Split(show[i+1:j], ",")
}

func hasFlag(show, flag string) bool {
	for _, f := range linkFlags(show) {
		if f == flag {
			return true
		}
	}
	return false
}

// result is how a command that ran to completion ended.
type result struct {
	stdout, stderr string
	code           int
}

// runToExit runs a command that must end by itself within timeout.
func runToExit(t *testing.T, timeout time.Duration, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not exit within %v (stdout %q, stderr %q)", name, strings.Join(args, " "), timeout, out.String(), errb.String())
	}
	r := result{stdout: out.String(), stderr: errb.String()}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s: %v", name, err)
		}
		r.code = ee.ExitCode()
	}
	return r
}

// syncBuffer collects a process's output while tests read it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a long-running process started by a test and stopped by
// t.Cleanup.
type proc struct {
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{}
	err    error // valid after done is closed
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.exited() {
			return
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			t.Errorf("%s did not stop within 5s of SIGTERM; killing it", name)
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s still running after %v; stderr:\n%s", p.cmd.Path, timeout, p.stderr.String())
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatalf("%s: %v", p.cmd.Path, p.err)
	return -1
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// processGone reports whether pid has exited (a zombie counts as gone:
// the daemon is reparented and nobody here reaps it).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the parenthesized command name.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z'
	}
	return false
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
