package main

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/vknetd/vknetd/control"
	"github.com/vknetd/vknetd/engine"
	"github.com/vknetd/vknetd/metrics"
)

func TestFdBudgetCountsEveryCappedSource(t *testing.T) {
	o, err := parseArgs([]string{"-U"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	plain := newFdBudget(o).total()
	if want := 2*1024 + 1 + control.MaxFds + engine.MaxMonitors + daemonFds; plain != want {
		t.Fatalf("default budget %d, want %d", plain, want)
	}
	o, err = parseArgs([]string{"-U", "--stream", "/s", "--dgram", "/d", "--metrics", "127.0.0.1:9477", "--max-clients", "10"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := newFdBudget(o).total(), 2*10+3+control.MaxFds+engine.MaxMonitors+metrics.MaxFds+daemonFds; got != want {
		t.Fatalf("budget with every socket and 10 clients %d, want %d", got, want)
	}
	// Each client is budgeted as a guest of one queue pair besides its
	// socket's fds; a supervised guest's are copied once more while its
	// changed state waits to go to the supervisor.
	for _, c := range []struct {
		args      []string
		perClient int
	}{{nil, fdsPerClient + vhostFdsPerClient}, {[]string{"--supervise"}, fdsPerClient + 2*vhostFdsPerClient}} {
		o, err = parseArgs(append([]string{"-U", "--vhost-user", "/v", "--max-clients", "10"}, c.args...), &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := newFdBudget(o).total(), c.perClient*10+2+control.MaxFds+engine.MaxMonitors+daemonFds+vhostMessageFds; got != want {
			t.Fatalf("budget with --vhost-user %v and 10 clients %d, want %d", c.args, got, want)
		}
	}
}

var fitsClients = regexp.MustCompile(`lower --max-clients to (\d+)`)

func TestFdBudgetRefusalSaysWhatFits(t *testing.T) {
	o, err := parseArgs([]string{"-U", "--metrics", "127.0.0.1:9477"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	b := newFdBudget(o)
	if err := b.check(uint64(b.total()), o.maxClients); err != nil {
		t.Fatalf("a limit equal to the budget: %v", err)
	}
	err = b.check(1024, o.maxClients)
	if err == nil {
		t.Fatal("1024 fds accepted for 1024 clients at 2 each")
	}
	msg := err.Error()
	for _, want := range []string{"limit 1024", "--max-clients 1024", "needs up to " + strconv.Itoa(b.total()), "LimitNOFILE=", "ulimit -n"} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal %q does not say %q", msg, want)
		}
	}
	m := fitsClients.FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("refusal %q suggests no --max-clients", msg)
	}
	n, _ := strconv.Atoi(m[1])
	o.maxClients = n
	if err := newFdBudget(o).check(1024, n); err != nil {
		t.Fatalf("the suggested --max-clients %d does not fit either: %v", n, err)
	}
	o.maxClients = n + 1
	if newFdBudget(o).check(1024, n+1) == nil {
		t.Fatalf("--max-clients %d fits too: the suggestion %d is not the most that does", n+1, n)
	}

	// Too low for even one client: no --max-clients would do.
	if err := b.check(50, o.maxClients); err == nil || fitsClients.MatchString(err.Error()) || !strings.Contains(err.Error(), "raise the limit") {
		t.Fatalf("a 50-fd limit: %v; want only the advice to raise it", err)
	}
}

// With --vhost-user each client is budgeted as a guest of one queue pair
// beside a socket client, and what the limit leaves beyond the rest goes
// to the guests together: at the budget's own limit, a guest of one pair
// for every client (its copies too under --supervise); a higher limit
// leaves them more.
func TestFdBudgetLeavesGuestsTheRest(t *testing.T) {
	for _, sup := range []bool{false, true} {
		args := []string{"-U", "--vhost-user", "/v", "--max-clients", "10"}
		if sup {
			args = append(args, "--supervise")
		}
		o, err := parseArgs(args, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		b := newFdBudget(o)
		if got := b.guestFds(uint64(b.total()), o); got != 10*vhostFdsPerClient {
			t.Errorf("supervise %v: guests get %d fds at the budget's limit %d, want %d", sup, got, b.total(), 10*vhostFdsPerClient)
		}
		more := b.guestFds(uint64(b.total()+100), o)
		if want := 10*vhostFdsPerClient + 100; !sup && more != want || sup && more != want-50 {
			t.Errorf("supervise %v: 100 fds more give the guests %d", sup, more)
		}
	}
	o, _ := parseArgs([]string{"-U"}, &bytes.Buffer{})
	if got := newFdBudget(o).guestFds(1<<20, o); got != 0 {
		t.Errorf("without --vhost-user the guests' fds are counted (%d)", got)
	}
}
