package qemu_test

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// report is what a guest's /init printed on its serial console: the VKT-* lines
// that scripts/qemu-guest.sh documents. Times are the guest's uptime in seconds.
type report struct {
	bootAt   float64 // /init started
	lease    netip.Addr
	leaseAt  float64
	pings    map[string]pingResult // by target
	order    []string              // targets as reported
	problems []string              // MODULE-FAIL, NO-ETH0, LEASE-FAIL lines
	done, ok bool
	wall     time.Duration // QEMU start to VKT-DONE, as the host saw it
	// iperf are the iperf3 runs (vkt.iperf) by direction, "to" the
	// server and "from" it (-R).
	iperf map[string]*iperfRun
}

// iperfRun is one iperf3 run as the guest reported it.
type iperfRun struct {
	streams  []iperfStream // each stream's receiver, then "SUM"
	done, ok bool          // VKT-IPERF-DONE, and whether it said ok
	at       float64
}

// iperfStream is what one stream's receiver got: amount in unit
// ("KBytes", "MBytes"...), at kbits a second.
type iperfStream struct {
	id, unit      string
	amount, kbits float64
}

type pingResult struct {
	ok  bool
	at  float64
	rtt string
}

func parseReport(console string) report {
	r := report{pings: map[string]pingResult{}, iperf: map[string]*iperfRun{}}
	run := func(dir string) *iperfRun {
		if r.iperf[dir] == nil {
			r.iperf[dir] = &iperfRun{}
		}
		return r.iperf[dir]
	}
	for _, line := range strings.Split(console, "\n") {
		// Kernel messages can share a line with ours: start at the marker.
		i := strings.Index(line, "VKT-")
		if i < 0 {
			continue
		}
		f := strings.Fields(line[i:])
		arg := func(n int) string {
			if n < len(f) {
				return f[n]
			}
			return ""
		}
		secs := func(n int) float64 {
			v, _ := strconv.ParseFloat(arg(n), 64)
			return v
		}
		switch f[0] {
		case "VKT-BOOT":
			r.bootAt = secs(1)
		case "VKT-LEASE":
			r.lease, _ = netip.ParseAddr(arg(1))
			r.leaseAt = secs(2)
		case "VKT-PING-OK", "VKT-PING-FAIL":
			if _, seen := r.pings[arg(1)]; !seen {
				r.order = append(r.order, arg(1))
			}
			r.pings[arg(1)] = pingResult{ok: f[0] == "VKT-PING-OK", at: secs(2), rtt: arg(3)}
		case "VKT-IPERF":
			ir := run(arg(1))
			ir.streams = append(ir.streams, iperfStream{id: arg(2), amount: secs(3), unit: arg(4), kbits: secs(5)})
		case "VKT-IPERF-DONE":
			ir := run(arg(1))
			ir.done, ir.ok, ir.at = true, arg(3) == "ok", secs(2)
		case "VKT-DONE":
			r.done, r.ok = true, arg(2) == "ok"
		case "VKT-MAC":
		default:
			r.problems = append(r.problems, strings.Join(f, " "))
		}
	}
	return r
}

// summary is one line for logs and failure messages.
func (r report) summary() string {
	var b strings.Builder
	if r.bootAt == 0 {
		return "nothing (its /init never ran)"
	}
	fmt.Fprintf(&b, "/init at %.1fs", r.bootAt)
	if r.lease.IsValid() {
		fmt.Fprintf(&b, ", lease %v at %.1fs", r.lease, r.leaseAt)
	}
	for _, target := range r.order {
		p := r.pings[target]
		if p.ok {
			fmt.Fprintf(&b, ", pinged %s at %.1fs (rtt %s)", target, p.at, p.rtt)
		} else {
			fmt.Fprintf(&b, ", no answer from %s by %.1fs", target, p.at)
		}
	}
	for _, dir := range []string{"to", "from"} {
		if ir := r.iperf[dir]; ir != nil {
			fmt.Fprintf(&b, ", iperf3 %s the server", dir)
			for _, st := range ir.streams {
				fmt.Fprintf(&b, " [%s] %g %s %g Kbit/s", st.id, st.amount, st.unit, st.kbits)
			}
			switch {
			case !ir.done:
				b.WriteString(" not done")
			case !ir.ok:
				fmt.Fprintf(&b, " failed at %.1fs", ir.at)
			}
		}
	}
	for _, p := range r.problems {
		fmt.Fprintf(&b, ", %s", p)
	}
	if !r.done {
		b.WriteString(", not done")
	}
	return b.String()
}

func TestParseReport(t *testing.T) {
	console := "SeaBIOS (version 1.16.2-debian-1.16.2-1)\r\n" +
		"VKT-BOOT 4.78 6.1.0-56-cloud-amd64\r\n" +
		"VKT-MAC 52:54:00:76:6b:11\r\n" +
		"VKT-LEASE 198.18.0.11 5.88\r\n" +
		"VKT-PING-OK 198.18.0.1 6.20 35.603ms\r\n" +
		"[    9.100000] random: crng init doneVKT-PING-FAIL 198.18.0.12 66.50\r\n" +
		"VKT-DONE 66.52 fail\r\n" +
		"[   66.60] reboot: Power down\r\n"
	r := parseReport(console)
	if !r.done || r.ok {
		t.Errorf("done=%v ok=%v, want done and not ok", r.done, r.ok)
	}
	if r.bootAt != 4.78 || r.lease != netip.MustParseAddr("198.18.0.11") || r.leaseAt != 5.88 {
		t.Errorf("boot %v, lease %v at %v", r.bootAt, r.lease, r.leaseAt)
	}
	if p := r.pings["198.18.0.1"]; !p.ok || p.at != 6.2 || p.rtt != "35.603ms" {
		t.Errorf("ping of the host: %+v", p)
	}
	if p, seen := r.pings["198.18.0.12"]; !seen || p.ok {
		t.Errorf("ping of the peer after a kernel message on the same line: %+v (seen %v)", p, seen)
	}
	want := "/init at 4.8s, lease 198.18.0.11 at 5.9s, pinged 198.18.0.1 at 6.2s (rtt 35.603ms), no answer from 198.18.0.12 by 66.5s"
	if got := r.summary(); got != want {
		t.Errorf("summary:\n got %s\nwant %s", got, want)
	}

	r = parseReport("VKT-BOOT 5.1 6.1\nVKT-IPERF to 5 412 KBytes 1109\nVKT-IPERF to SUM 1.2 MBytes 3301\nVKT-IPERF-DONE to 20.5 ok\n" +
		"VKT-IPERF-DONE from 40.1 fail\n")
	if to := r.iperf["to"]; to == nil || !to.done || !to.ok || len(to.streams) != 2 ||
		to.streams[0] != (iperfStream{id: "5", amount: 412, unit: "KBytes", kbits: 1109}) || to.streams[1].id != "SUM" {
		t.Errorf("iperf3 to the server: %+v", to)
	}
	if from := r.iperf["from"]; from == nil || !from.done || from.ok || from.at != 40.1 {
		t.Errorf("iperf3 from the server: %+v", from)
	}
	if got, want := r.summary(), "/init at 5.1s, iperf3 to the server [5] 412 KBytes 1109 Kbit/s [SUM] 1.2 MBytes 3301 Kbit/s, "+
		"iperf3 from the server failed at 40.1s, not done"; got != want {
		t.Errorf("summary with iperf3:\n got %s\nwant %s", got, want)
	}

	r = parseReport("VKT-BOOT 5.1 6.1\nVKT-MODULE-FAIL virtio_net.ko\nVKT-NO-ETH0 15.2 lo\n")
	if r.done || r.lease.IsValid() {
		t.Errorf("an unfinished boot parsed as done=%v lease=%v", r.done, r.lease)
	}
	if got := r.summary(); got != "/init at 5.1s, VKT-MODULE-FAIL virtio_net.ko, VKT-NO-ETH0 15.2 lo, not done" {
		t.Errorf("summary of a failed boot: %s", got)
	}
	if got := parseReport("SeaBIOS\r\n").summary(); got != "nothing (its /init never ran)" {
		t.Errorf("summary of a guest that never ran /init: %s", got)
	}
}
