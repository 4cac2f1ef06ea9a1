package vhostuser

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// checkEventfd refuses a kick or call fd that is not a plain eventfd.
// The loop polls a kick fd and reads it once each time it is readable:
// only an eventfd then stops being readable until the next kick. The read
// end of a pipe whose writer closed is readable forever and reads end of
// file, a socket or a file whatever its other end does; an eventfd in
// semaphore mode gives its count back one kick per read. Each of those
// would spin the daemon at no cost to the guest (issue 15, finding 2).
//
// The kernel tells an eventfd by its fdinfo, the only one with an
// "eventfd-count:" line (since Linux 3.8); recent kernels add an
// "eventfd-semaphore:" line, older ones let semaphore mode pass. /proc/self
// is the daemon's own, readable under --user too. Read once per
// SET_VRING_KICK or SET_VRING_CALL, never per frame.
func checkEventfd(h header, q int, what string, fd int) error {
	path := "/proc/self/fdinfo/" + strconv.Itoa(fd)
	info, err := os.ReadFile(path)
	if err != nil {
		// Not the guest's doing: say what the daemon lacks.
		return fmt.Errorf("vhost-user: %v: queue %d: cannot tell whether the %s fd is an eventfd: %w (vknetd needs /proc mounted)",
			h.req, q, what, err)
	}
	var eventfd, semaphore bool
	for line := range bytes.Lines(info) {
		if v, ok := bytes.CutPrefix(line, []byte("eventfd-count:")); ok && len(v) > 0 {
			eventfd = true
		}
		if v, ok := bytes.CutPrefix(line, []byte("eventfd-semaphore:")); ok {
			semaphore = string(bytes.TrimSpace(v)) != "0"
		}
	}
	switch {
	case !eventfd:
		return violation("%v: queue %d: the %s fd is not an eventfd", h.req, q, what)
	case semaphore:
		return violation("%v: queue %d: the %s fd is an eventfd in semaphore mode", h.req, q, what)
	}
	return nil
}
