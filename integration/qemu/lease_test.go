package qemu_test

import (
	"strconv"
	"testing"
	"time"
)

// With --ip-source dhcp a real guest takes its lease from dnsmasq through the
// switch and pings the host from it, and the host reaches it. The guest's udhcpc
// quits once it has its lease (-q) and never renews, so when dnsmasq's 2-minute
// lease ends the guest keeps using an address that is no longer leased to it:
// from then on its replies are refused (ip-not-leased) and the host's pings go
// unanswered. They answer until the lease ends: it must not end early either.
func TestGuestInDHCPModeLosesItsAddressWhenTheLeaseEnds(t *testing.T) {
	const lease = 2 * time.Minute
	l := newLabWith(t, labOptions{daemonArgs: []string{"--ip-source", "dhcp"}, leaseTime: "2m"})
	g := l.boot(t, "l1", "52:54:00:76:6b:41", overStream, "vkt.ping="+hostIP, "vkt.hold=400")
	r, err := g.wait(time.Now().Add(guestTimeout))
	leased := time.Now() // the ACK came before: the lease ends by leased+lease
	g.check(t, r, err, "", hostIP)
	if t.Failed() {
		return
	}
	guest := r.lease.String()
	if ok, out := l.ns.Ping(t, guest, 2); !ok {
		t.Fatalf("the host cannot ping guest l1 at %s:\n%s", guest, out)
	}
	port := ""
	for _, p := range l.daemon.Counters(t).Ports {
		if p["kind"] == "stream" {
			port = p["port"]
		}
	}
	if port == "" {
		t.Fatal("no stream port in the daemon's counters")
	}
	notLeased := func() int {
		for _, p := range l.daemon.Counters(t).Ports {
			if p["port"] == port {
				n, _ := strconv.Atoi(p["drop_ip-not-leased"])
				return n
			}
		}
		t.Fatalf("guest l1's port %s is gone", port)
		return 0
	}
	if n := notLeased(); n != 0 {
		t.Fatalf("%d of the leased guest's frames were dropped as ip-not-leased", n)
	}

	// The lease cannot end before QEMU started plus its time, and must have
	// ended by the time the guest reported plus its time (and a sweep).
	earliest, latest := g.started.Add(lease), leased.Add(lease+2*time.Second)
	for {
		ok, out := l.ns.Ping(t, guest, 1)
		now := time.Now()
		if !ok && now.Before(earliest.Add(-2*time.Second)) {
			// One lost ping on a busy machine: ask again before judging.
			if ok, out = l.ns.Ping(t, guest, 2); !ok {
				t.Fatalf("guest l1 stopped answering %v after its lease, before it could have ended (%v):\n%s",
					now.Sub(leased).Round(time.Second), lease, out)
			}
		}
		if !ok && now.After(earliest) {
			t.Logf("guest l1 stopped answering %v after it reported its lease", now.Sub(leased).Round(time.Second))
			break
		}
		if now.After(latest.Add(10 * time.Second)) {
			t.Fatalf("guest l1 still answers at %s %v after its %v lease:\n%s", guest, now.Sub(leased).Round(time.Second), lease, out)
		}
		time.Sleep(2 * time.Second)
	}
	if ok, out := l.ns.Ping(t, guest, 3); ok {
		t.Errorf("guest l1 answers again at %s after its lease ended:\n%s", guest, out)
	}
	if n := notLeased(); n == 0 {
		t.Error("guest l1's replies after its lease were not dropped as ip-not-leased")
	}
	g.stop(t)
}
