package testbed

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// StopTimeout is how long a stopped process gets between SIGTERM and SIGKILL.
const StopTimeout = 5 * time.Second

// Proc is a background process started by Netns.Start.
type Proc struct {
	// Cmd is the running command; its Process is set. Do not call Cmd.Wait: Proc does.
	Cmd  *exec.Cmd
	name string
	out  syncBuffer
	done chan struct{}
	err  error // Cmd.Wait's result, valid once done is closed
}

func start(t testing.TB, name, prog string, args ...string) *Proc {
	t.Helper()
	p := &Proc{name: name, done: make(chan struct{})}
	p.Cmd = exec.Command(prog, args...)
	p.Cmd.Stdout = &p.out
	p.Cmd.Stderr = &p.out
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
		if err := p.Stop(StopTimeout); err != nil {
			t.Errorf("stopping %s: %v", name, err)
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

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

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
	select {
	case <-p.done:
		return nil
	default:
	}
	pgid := p.Cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
		return errors.New("still running 5s after SIGKILL")
	}
}

// syncBuffer is the output buffer both of a command's streams and the test's
// goroutine use at once.
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
