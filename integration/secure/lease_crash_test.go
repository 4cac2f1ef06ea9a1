//go:build linux

package secure

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vknetd/vknetd/control"
)

// TestSupervisorCrashKeepsLeaseEnd: under --supervise, a dnsmasq lease
// survives kill -9 of the daemon with its end where it was, not later.
// The daemon is killed four times in a row, each new one before it sends
// a table of its own, so the supervisor's copy is the first daemon's and
// the back-off (0.25 + 0.5 + 1 s) passes before the last restart: a
// supervisor that restored the copy's time left unchanged would move the
// lease's end over 1.75 s later.
func TestSupervisorCrashKeepsLeaseEnd(t *testing.T) {
	d := startDaemon(t, "--supervise", "--ip-source", "dhcp")
	pidfile, ctl := d.p.Pidfile, d.p.Sock+".ctl"
	daemonPid := func() int {
		b, _ := os.ReadFile(pidfile)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return pid
	}
	// The supervisor ignores SIGTERM; stopping the daemon stops it.
	t.Cleanup(func() {
		if pid := daemonPid(); pid > 0 {
			syscall.Kill(pid, syscall.SIGTERM)
		}
	})
	startDnsmasq(t, d)
	_, _, mac, lease := dhcpClient(t, d)
	ip := lease.Addr().String()

	// leaseEnd is when the daemon says the lease ends.
	leaseEnd := func() (time.Time, control.Binding) {
		t.Helper()
		c, err := control.Dial(ctl)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		bs, err := c.Bindings()
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bs {
			if b.IP == ip {
				return time.Now().Add(time.Duration(b.ExpiresSecs * float64(time.Second))), b
			}
		}
		t.Fatalf("no binding of the leased %s: %+v\ndaemon:\n%s", ip, bs, d.p.Output())
		return time.Time{}, control.Binding{}
	}
	time.Sleep(1500 * time.Millisecond) // the supervisor has a copy with the lease
	endBefore, b := leaseEnd()
	if b.Source != "lease" || b.MAC != hw(mac).String() || b.ExpiresSecs <= 0 {
		t.Fatalf("the leased %s is bound as %+v, want a lease of %s with an end", ip, b, hw(mac))
	}

	for kill := 1; kill <= 4; kill++ {
		pid := daemonPid()
		syscall.Kill(pid, syscall.SIGKILL)
		deadline := time.Now().Add(5 * time.Second)
		for {
			if p := daemonPid(); p > 0 && p != pid && syscall.Kill(p, 0) == nil {
				if c, err := control.Dial(ctl); err == nil {
					c.Close()
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no new daemon within 5 s of kill -9 number %d\n%s", kill, d.p.Output())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	endAfter, a := leaseEnd()
	if a.Source != "lease" || a.MAC != b.MAC || a.Port != b.Port {
		t.Fatalf("after the crashes %s is bound as %+v, before %+v", ip, a, b)
	}
	if late := endAfter.Sub(endBefore); late > 500*time.Millisecond || late < -time.Second {
		t.Errorf("the lease ends %v later after four kill -9 than before (want at most 0.5 s later, at most 1 s earlier)", late.Round(time.Millisecond))
	} else {
		t.Logf("the lease's end moved %v across four kill -9", late.Round(time.Millisecond))
	}
}
