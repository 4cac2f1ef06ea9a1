package vhostuser

import "fmt"

func (d *Device) DebugState() string {
	s := ""
	for i := range d.q {
		q := &d.q[i].vq
		if q.avail == nil {
			continue
		}
		s += fmt.Sprintf(" q%d{lastAvail %d usedIdx %d availIdx %d kicksAllowed %v avail_event %d}", i, q.lastAvail, q.usedIdx, q.availIdx(), q.kicksAllowed, load16(q.used, 4+8*q.num))
	}
	return s
}
