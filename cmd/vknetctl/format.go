package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vknetd/vknetd/control"
)

func writePorts(w io.Writer, ports []control.Port) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tKIND\tPID\tUID\tMACS\tRX-FRAMES\tRX-BYTES\tTX-FRAMES\tTX-BYTES\tQUEUED\tOFFLOADS\tWORKERS\tKICKS\tDROPS\tNAME")
	for _, p := range ports {
		off := p.Offloads
		if off == "" {
			off = "-" // a daemon from before offloads were listed
		}
		workers := p.Workers
		if workers == "" {
			workers = "-" // a daemon from before workers were listed
		}
		kicks := "-" // only vhost-user guests kick
		if p.Kind == "vhost-user" {
			kicks = strconv.FormatUint(p.Kicks, 10)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", p.ID, p.Kind, cred(p.PID), cred(p.UID),
			p.MACs, p.RxFrames, p.RxBytes, p.TxFrames, p.TxBytes, p.Queued, off, workers, kicks, drops(p.Drops, "="), p.Name)
	}
	return tw.Flush()
}

// cred shows an unknown pid or uid (-1) as "-".
func cred(v int32) string {
	if v < 0 {
		return "-"
	}
	return strconv.Itoa(int(v))
}

// drops lists non-zero drop counters by reason name, "-" when none.
func drops(m map[string]uint64, sep string) string {
	var b strings.Builder
	for _, r := range control.SortedDrops(m) {
		if m[r] == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%s%s%d", r, sep, m[r])
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}

// writeMACs prints the table the way `bridge fdb show` does: one entry a
// line, address first.
func writeMACs(w io.Writer, macs []control.MAC) error {
	for _, m := range macs {
		who := m.Name
		if m.PID >= 0 {
			who = "pid " + strconv.Itoa(int(m.PID))
		}
		line := fmt.Sprintf("%s port %d %s %s age %s", m.MAC, m.Port, m.Kind, who, age(m.AgeSecs))
		if m.PortGone {
			line += " (port closed)"
		}
		if m.Via != "" {
			// Like bridge fdb's "dev vxlan0 dst 192.0.2.2": another host's.
			line += " remote via " + m.Via
			if m.VTEP != "" {
				line += " dst " + m.VTEP
			}
		}
		if _, err := fmt.Fprintln(w, strings.Join(strings.Fields(line), " ")); err != nil {
			return err
		}
	}
	return nil
}

func age(secs float64) string {
	return (time.Duration(secs * float64(time.Second))).Round(time.Second).String()
}

// writeBindings prints one binding a line: address, MAC, port, where the
// binding came from and the time left before it ends unless used again.
func writeBindings(w io.Writer, bs []control.Binding) error {
	for _, b := range bs {
		expires := "with its client"
		if b.ExpiresSecs > 0 {
			expires = age(b.ExpiresSecs)
		}
		if _, err := fmt.Fprintf(w, "%s %s port %d %s expires %s\n", b.IP, b.MAC, b.Port, b.Source, expires); err != nil {
			return err
		}
	}
	return nil
}

func writeStats(w io.Writer, s control.Stats) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	var kinds []string
	for _, k := range control.ClientKinds {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, s.ClientsByKind[k]))
	}
	fmt.Fprintf(tw, "clients\t%d (%s), %d accepted since start\n", s.Clients, strings.Join(kinds, ", "), s.Accepted)
	fmt.Fprintf(tw, "monitors\t%d\n", s.Monitors)
	fmt.Fprintf(tw, "macs\t%d, %d moved with their VM\n", s.MACs, s.MACMoves)
	fmt.Fprintf(tw, "buffers\t%d free of %d, %d frames queued\n", s.BuffersFree, s.Buffers, s.Queued)
	traffic := func(name string, t control.Traffic) {
		fmt.Fprintf(tw, "%s\trx %d frames %d bytes, tx %d frames %d bytes\n", name, t.RxFrames, t.RxBytes, t.TxFrames, t.TxBytes)
	}
	traffic("tap", s.Traffic.TAP)
	if s.Traffic.Remote != nil {
		traffic("  remote hosts", *s.Traffic.Remote)
	}
	traffic("all clients", s.Traffic.Clients)
	fmt.Fprintf(tw, "drops\t%s\n", strings.ReplaceAll(drops(s.Drops, " "), ",", ", "))
	fmt.Fprintf(tw, "unlearned\t%d\n", s.Unlearned)
	if s.Restarts > 0 {
		fmt.Fprintf(tw, "restarts\t%d (the supervisor started a new daemon after a crash)\n", s.Restarts)
	}
	return tw.Flush()
}
