package testbed

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// StopTimeout is how long a stopped process gets between SIGTERM and SIGKILL.
const StopTimeout = 5 * time.Second

// Proc is a background process started by Netns.Start or Netns.StartSplit.
type Proc struct {
	// Cmd is the running command; its Process is set. Do not call Cmd.Wait: Proc does.
	Cmd  *exec.Cmd
	name string
	out  output
	done chan struct{}
	err  error // Cmd.Wait's result, valid once done is closed
}

func start(t testing.TB, split bool, in io.Reader, name, prog string, args ...string) *Proc {
	t.Helper()
	p := &Proc{name: name, done: make(chan struct{})}
	p.Cmd = exec.Command(prog, args...)
	p.Cmd.Stdin = in
	if split {
		p.out.split = true
		p.Cmd.Stdout = stream{&p.out, &p.out.stdout}
		p.Cmd.Stderr = stream{&p.out, &p.out.stderr}
	} else {
		// One writer for both: exec.Cmd then uses one pipe, and Output keeps the
		// order in which the process wrote.
		p.Cmd.Stdout = &p.out
		p.Cmd.Stderr = &p.out
	}
	// Its own process group, so Stop reaches the children it forks as well.
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A child that keeps the output pipe open must not keep Wait from returning.
	p.Cmd.WaitDelay = time.Second
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		// A process that ignores SIGTERM would not stop cleanly for its user either.
		if killed, err := p.stop(StopTimeout); err != nil {
			t.Errorf("stopping %s: %v", name, err)
		} else if killed {
			t.Errorf("%s did not stop within %v of SIGTERM; killed it", name, StopTimeout)
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, p.Output())
		}
	})
	return p
}

// Pid returns the process id. `ip netns exec` execs the command in place, so this is
// the command's own pid.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Output returns everything the process wrote to stdout and stderr so far.
func (p *Proc) Output() string { return p.out.String() }

// Stdout returns what the process wrote to stdout so far. Only a process started with
// StartSplit keeps it apart; for one started with Start it panics, as a test that
// reads it has a bug.
func (p *Proc) Stdout() string { return p.out.stream(&p.out.stdout) }

// Stderr is Stdout for stderr.
func (p *Proc) Stderr() string { return p.out.stream(&p.out.stderr) }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process (not to its group). It returns os.ErrProcessDone
// once the process has exited.
func (p *Proc) Signal(sig os.Signal) error {
	select {
	case <-p.done:
		return os.ErrProcessDone
	default:
	}
	return p.Cmd.Process.Signal(sig)
}

// Wait waits up to timeout for the process to exit and returns its exit status as
// exec.Cmd.Wait does: nil for status 0, an *exec.ExitError otherwise. If it is still
// running it returns an error wrapping os.ErrDeadlineExceeded.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
		return fmt.Errorf("%s still running after %v: %w", p.name, timeout, os.ErrDeadlineExceeded)
	}
}

// ExitCode returns the exit status, or -1 while running or when killed by a signal.
func (p *Proc) ExitCode() int {
	select {
	case <-p.done:
		return p.Cmd.ProcessState.ExitCode()
	default:
		return -1
	}
}

// WaitOutput waits until the output contains substr and returns the output, failing
// the test if the process exits first or timeout passes.
func (p *Proc) WaitOutput(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if out := p.Output(); strings.Contains(out, substr) {
			return out
		}
		select {
		case <-p.done:
			if out := p.Output(); strings.Contains(out, substr) {
				return out
			}
			t.Fatalf("%s exited (%v) without printing %q; output:\n%s", p.name, p.err, substr, p.Output())
		case <-deadline:
			t.Fatalf("%s did not print %q within %v; output:\n%s", p.name, substr, timeout, p.Output())
		case <-tick.C:
		}
	}
}

// Stop sends SIGTERM to the process group, then SIGKILL if it has not exited after
// timeout, and waits for the exit. It returns an error only if the process survives
// SIGKILL; how it exited is for Wait to report.
func (p *Proc) Stop(timeout time.Duration) error {
	_, err := p.stop(timeout)
	return err
}

// stop is Stop that also says whether SIGTERM was not enough.
func (p *Proc) stop(timeout time.Duration) (killed bool, err error) {
	select {
	case <-p.done:
		return false, nil
	default:
	}
	pgid := p.Cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
		return false, nil
	case <-time.After(timeout):
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
		return true, nil
	case <-time.After(5 * time.Second):
		return true, errors.New("still running 5s after SIGKILL")
	}
}

// ProcessAlive reports whether pid is a running process. A zombie is not: a daemon
// that went to the background has been reparented, and its exit shows only as a
// zombie until init reaps it.
func ProcessAlive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may hold spaces.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// output is a process's output, which its streams and the test's goroutine use at
// once: both streams in all, and, when split, each in its own buffer too.
type output struct {
	mu             sync.Mutex
	split          bool
	all            bytes.Buffer
	stdout, stderr bytes.Buffer
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.all.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.all.String()
}

func (o *output) stream(b *bytes.Buffer) string {
	if !o.split {
		panic("testbed: Stdout or Stderr of a process started with Start, which keeps one combined stream: start it with StartSplit")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return b.String()
}

// stream writes one of a split process's streams.
type stream struct {
	o   *output
	own *bytes.Buffer
}

func (s stream) Write(p []byte) (int, error) {
	s.o.mu.Lock()
	defer s.o.mu.Unlock()
	s.o.all.Write(p)
	return s.own.Write(p)
}
