package engine

import (
	"fmt"
	"sync/atomic"
)

// Guest file descriptors. A vhost-user guest chooses how many of the
// daemon's fds it holds: a kick and a call eventfd for each of up to 8
// queue pairs, up to 8 memory files, and the 8 fds of a message it sends
// slowly (vhostuser.MaxDeviceFds, 49). The daemon's limit is budgeted for
// each client as a guest with one queue pair and one memory file; what
// guests hold beyond comes from what the limit has left
// (Config.GuestFds), counted as they ask for it. A guest whose request
// would take more is closed with a refusal naming the budget, instead of
// the daemon running out and failing the listeners, vknetctl or the other
// clients' accepts.

// guestFdBudget is the most fds all vhost-user devices may hold together
// (0: not counted) and what they hold now; devices on every loop change it.
type guestFdBudget struct {
	most int64
	used atomic.Int64
}

// guestFds is one vhost-user port's account; its set is the device's
// Config.Fds.
type guestFds struct {
	budget *guestFdBudget
	held   int
}

// set makes the account hold n fds instead of what it held. Growing past
// the budget is refused with what to do; the account holds n all the
// same, until the device closes (set(0)).
func (f *guestFds) set(n int) error {
	b := f.budget
	grow := int64(n - f.held)
	f.held = n
	used := b.used.Add(grow)
	if grow > 0 && b.most > 0 && used > b.most {
		return fmt.Errorf("vhost-user guests would hold %d file descriptors together (this one %d), over the %d the daemon's fd limit leaves them: raise the limit (LimitNOFILE=, ulimit -n) or lower --max-clients; a guest with fewer queue pairs (queues=) and memory backends needs fewer",
			used, n, b.most)
	}
	return nil
}
