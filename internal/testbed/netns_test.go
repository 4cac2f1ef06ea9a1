package testbed

import (
	"errors"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func waitDead(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ProcessAlive(pid); {
		if time.Now().After(deadline) {
			t.Errorf("process %d still alive after cleanup", pid)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNetnsCleanup(t *testing.T) {
	RequireRoot(t)
	var name string
	var procPid, orphanPid int
	t.Run("inside", func(t *testing.T) {
		n := NewNetns(t)
		name = n.Name
		if !strings.HasPrefix(name, "vkt-"+strconv.Itoa(os.Getpid())+"-") || !nsName.MatchString(name) {
			t.Errorf("namespace name %q is not vkt-<pid>-<n>", name)
		}
		out := n.Run(t, "ip", "link", "show")
		if !strings.Contains(out, "lo:") || !strings.Contains(out, "LOOPBACK,UP") {
			t.Errorf("loopback is not up in %s:\n%s", name, out)
		}
		// Only lo: the command ran in the new namespace, not the host's.
		if c := strings.Count(out, "link/"); c != 1 {
			t.Errorf("%d links in a new namespace, want only lo:\n%s", c, out)
		}

		procPid = n.Start(t, "sleep", "600").Pid()
		// One that escaped Proc's tracking, as a daemon going to the background does.
		orphan := strings.TrimSpace(n.Run(t, "sh", "-c", "sleep 600 </dev/null >/dev/null 2>&1 & echo $!"))
		var err error
		if orphanPid, err = strconv.Atoi(orphan); err != nil {
			t.Fatalf("orphan pid %q: %v", orphan, err)
		}
		in := strings.Fields(mustOutput(t, "ip", "netns", "pids", name))
		for _, pid := range []int{procPid, orphanPid} {
			if !slices.Contains(in, strconv.Itoa(pid)) {
				t.Errorf("process %d is not in %s (ip netns pids: %v)", pid, name, in)
			}
		}
		if !strings.Contains(mustOutput(t, "ip", "netns", "list"), name) {
			t.Errorf("%s not in ip netns list", name)
		}
	})
	if name == "" {
		t.Fatal("subtest did not create a namespace")
	}
	if strings.Contains(mustOutput(t, "ip", "netns", "list"), name) {
		t.Errorf("%s still listed after cleanup", name)
	}
	if _, err := os.Stat("/run/netns/" + name); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("/run/netns/%s after cleanup: %v", name, err)
	}
	waitDead(t, procPid)
	waitDead(t, orphanPid)
}

func mustOutput(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestNetnsRunFails(t *testing.T) {
	n := NewNetns(t)
	if out, err := n.Try("sh", "-c", "echo oops; exit 4"); err == nil || out != "oops\n" {
		t.Errorf("Try of a failing command: %q, %v", out, err)
	}
	msg := mustFail(t, func(tb testing.TB) { n.Run(tb, "sh", "-c", "echo oops; exit 4") })
	if !strings.Contains(msg, "oops") || !strings.Contains(msg, n.Name) {
		t.Errorf("Run's failure lacks the output or the namespace: %s", msg)
	}
}

func TestProc(t *testing.T) {
	n := NewNetns(t)

	p := n.Start(t, "sh", "-c", "echo out; echo err >&2; exit 3")
	var ee *exec.ExitError
	if err := p.Wait(5 * time.Second); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("Wait: %v, want exit status 3", err)
	}
	if p.ExitCode() != 3 || p.Output() != "out\nerr\n" {
		t.Errorf("ExitCode %d, Output %q", p.ExitCode(), p.Output())
	}

	s := n.Start(t, "sleep", "600")
	if err := s.Wait(20 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Wait on a running process: %v", err)
	}
	if s.ExitCode() != -1 || s.Exited() {
		t.Errorf("running process: ExitCode %d, Exited %v", s.ExitCode(), s.Exited())
	}
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := s.Wait(5 * time.Second)
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Errorf("Wait after SIGTERM: %v", err)
	}
	if err := s.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Signal after exit: %v", err)
	}

	// Stop escalates to SIGKILL, for the whole process group, when SIGTERM is ignored.
	stubborn := n.Start(t, "sh", "-c", `trap "" TERM; echo ready; sleep 600; echo never`)
	stubborn.WaitOutput(t, "ready", 5*time.Second)
	if err := stubborn.Stop(200 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := stubborn.Wait(0); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("stubborn process ended with %v, want SIGKILL", err)
	}
	for deadline := time.Now().Add(5 * time.Second); len(netnsPids(n.Name)) > 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("processes left in %s after Stop: %v", n.Name, netnsPids(n.Name))
		}
	}

	if !p.Exited() || !s.Exited() || !stubborn.Exited() {
		t.Errorf("Exited after exit: %v %v %v, want true for all three", p.Exited(), s.Exited(), stubborn.Exited())
	}

	bye := n.Start(t, "echo", "bye")
	msg := mustFail(t, func(tb testing.TB) { bye.WaitOutput(tb, "hello", 5*time.Second) })
	if !strings.Contains(msg, "exited") || !strings.Contains(msg, "bye") {
		t.Errorf("WaitOutput's failure: %s", msg)
	}
}

func TestStartSplit(t *testing.T) {
	n := NewNetns(t)
	p := n.StartSplit(t, "sh", "-c", "echo out; echo err >&2; echo out2")
	if err := p.Wait(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if p.Stdout() != "out\nout2\n" || p.Stderr() != "err\n" {
		t.Errorf("Stdout %q, Stderr %q", p.Stdout(), p.Stderr())
	}
	if out := p.Output(); len(out) != len("out\nout2\nerr\n") || !strings.Contains(out, "err\n") {
		t.Errorf("Output %q does not hold both streams", out)
	}

	combined := n.Start(t, "true")
	defer func() {
		if recover() == nil {
			t.Error("Stdout of a process started with Start did not panic")
		}
	}()
	_ = combined.Stdout()
}

// A process that needs SIGKILL at cleanup fails the test: it would not stop cleanly
// for its user either.
func TestCleanupReportsIgnoredSIGTERM(t *testing.T) {
	n := NewNetns(t)
	var pid int
	f := &fakeTB{}
	t.Run("start", func(t *testing.T) {
		f.TB = t
		p := n.Start(f, "sh", "-c", `trap "" TERM; echo ready; sleep 600`)
		p.WaitOutput(f, "ready", 5*time.Second)
		pid = p.Pid()
	})
	if !f.Failed() || !strings.Contains(strings.Join(f.msgs, "\n"), "did not stop within") {
		t.Errorf("cleanup of a process that ignores SIGTERM did not fail the test: %q", f.msgs)
	}
	waitDead(t, pid)
}

func TestLinkShowAndHasFlag(t *testing.T) {
	n := NewNetns(t)
	show, ok := n.LinkShow("lo")
	if !ok || !HasFlag(show, "UP") || !HasFlag(show, "LOOPBACK") || HasFlag(show, "LOOP") {
		t.Errorf("LinkShow(lo) = %v:\n%s", ok, show)
	}
	n.Run(t, "ip", "tuntap", "add", "dev", "vkt-t0", "mode", "tap")
	if show, ok := n.LinkShow("vkt-t0"); !ok || HasFlag(show, "UP") || !strings.Contains(show, "tun type tap") {
		t.Errorf("LinkShow(vkt-t0), a TAP left down, = %v:\n%s", ok, show)
	}
	if show, ok := n.LinkShow("vkt-none"); ok {
		t.Errorf("LinkShow of a missing link reports it exists:\n%s", show)
	}
	if HasFlag("no flags here", "UP") || HasFlag("a> <b", "b") {
		t.Error("HasFlag found a flag outside <...>")
	}
}

func TestPids(t *testing.T) {
	n := NewNetns(t)
	if pids := n.Pids(); len(pids) != 0 {
		t.Errorf("a new namespace runs %v", pids)
	}
	p := n.Start(t, "sleep", "600")
	// ip netns exec enters the namespace after it is started: give it
	// a moment before the namespace counts it.
	pids := n.Pids()
	for deadline := time.Now().Add(5 * time.Second); len(pids) == 0 && time.Now().Before(deadline); pids = n.Pids() {
		time.Sleep(10 * time.Millisecond)
	}
	if !slices.Equal(pids, []int{p.Pid()}) {
		t.Errorf("Pids = %v, want [%d]", pids, p.Pid())
	}
}

func TestWaitLinkAndLinkMAC(t *testing.T) {
	n := NewNetns(t)
	n.WaitLink(t, "lo", time.Second)
	go func() {
		time.Sleep(100 * time.Millisecond)
		_, _ = n.Try("ip", "tuntap", "add", "dev", "vkt-t0", "mode", "tap")
	}()
	n.WaitLink(t, "vkt-t0", 5*time.Second)
	n.Run(t, "ip", "link", "set", "dev", "vkt-t0", "address", "02:00:00:00:00:33")
	if got := n.LinkMAC(t, "vkt-t0"); got != MAC(0x33) {
		t.Errorf("LinkMAC = % x, want % x", got, MAC(0x33))
	}
	msg := mustFail(t, func(tb testing.TB) { n.WaitLink(tb, "vkt-none", 100*time.Millisecond) })
	if !strings.Contains(msg, "vkt-none") {
		t.Errorf("WaitLink's failure does not name the link: %s", msg)
	}
}

func TestDisableIPv6(t *testing.T) {
	n := NewNetns(t)
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skip("kernel without IPv6")
	}
	hostBefore, err := os.ReadFile("/proc/sys/net/ipv6/conf/default/disable_ipv6")
	if err != nil {
		t.Fatal(err)
	}
	n.DisableIPv6(t)
	n.Run(t, "ip", "tuntap", "add", "dev", "vkt-t0", "mode", "tap")
	got := strings.TrimSpace(n.Run(t, "cat", "/proc/sys/net/ipv6/conf/vkt-t0/disable_ipv6"))
	if got != "1" {
		t.Errorf("a link created after DisableIPv6 has disable_ipv6=%s", got)
	}
	// Written in the namespace, not on the host.
	if hostAfter, err := os.ReadFile("/proc/sys/net/ipv6/conf/default/disable_ipv6"); err != nil || string(hostAfter) != string(hostBefore) {
		t.Errorf("host's default disable_ipv6 changed from %q to %q (%v)", hostBefore, hostAfter, err)
	}
}

func TestReapStale(t *testing.T) {
	RequireRoot(t)
	RequireTool(t, "ip")
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := "vkt-" + strconv.Itoa(dead.Process.Pid) + "-1"
	// Names this package would not give, or whose creator lives, must survive.
	keep := []string{"vkt-1-" + strconv.Itoa(os.Getpid()), "vkt-demo-" + strconv.Itoa(dead.Process.Pid)}
	for _, name := range append([]string{stale}, keep...) {
		mustOutput(t, "ip", "netns", "add", name)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", name).Run() })
	}
	reapStale(t)
	list := mustOutput(t, "ip", "netns", "list")
	if strings.Contains(list, stale+" ") || strings.Contains(list, stale+"\n") {
		t.Errorf("stale %s not removed:\n%s", stale, list)
	}
	for _, name := range keep {
		if !strings.Contains(list, name) {
			t.Errorf("%s was removed:\n%s", name, list)
		}
	}
}
