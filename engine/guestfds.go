package engine

import (
	"fmt"
	"sync/atomic"
)

// Guest file descriptors. A vhost-user guest chooses how many of the
// daemon's fds it holds: a kick and a call eventfd for each of up to 8
// queue pairs, up to 8 memory files, and the 8 fds of a message it sends
// slowly (vhostuser.MaxDeviceFds, 49). The daemon's limit is budgeted for
// each client as a guest of one queue pair (GuestFdsEach), which any
// guest may always hold; what guests hold beyond that comes out of what
// the limit leaves (Config.GuestFds), counted as they ask. A guest whose
// request would take more is closed with a refusal naming the budget,
// instead of the daemon running out and failing the listeners, vknetctl
// or the other clients' accepts. Guests of one queue pair are never
// refused for what others took.

// GuestFdsEach is what every vhost-user guest may hold uncounted: its
// socket, a kick and a call eventfd for each ring of one queue pair, and
// a fd of its memory file.
const GuestFdsEach = 6

// guestFdBudget is the most fds all vhost-user devices may hold together
// beyond GuestFdsEach each (negative: not counted), and what they hold
// now; devices on every loop change it.
type guestFdBudget struct {
	most int64
	used atomic.Int64
}

// newGuestFdBudget is the budget for total fds (Config.GuestFds, 0: not
// counted) of which GuestFdsEach for each of maxClients.
func newGuestFdBudget(total, maxClients int) guestFdBudget {
	if total <= 0 {
		return guestFdBudget{most: -1}
	}
	return guestFdBudget{most: max(int64(total)-int64(GuestFdsEach*maxClients), 0)}
}

// guestFds is one vhost-user port's account; its set is the device's
// Config.Fds.
type guestFds struct {
	budget *guestFdBudget
	beyond int // held beyond GuestFdsEach
}

// set makes the account hold n fds instead of what it held. Growing past
// the budget is refused with what to do; the account holds n all the
// same, until the device closes (set(0)).
func (f *guestFds) set(n int) error {
	b := f.budget
	beyond := max(n-GuestFdsEach, 0)
	grow := int64(beyond - f.beyond)
	f.beyond = beyond
	used := b.used.Add(grow)
	if grow > 0 && b.most >= 0 && used > b.most {
		return fmt.Errorf("this guest would hold %d file descriptors, and vhost-user guests %d beyond %d each, over the %d the daemon's fd limit leaves them: raise the limit (LimitNOFILE=, ulimit -n) or lower --max-clients; a guest with fewer queue pairs (queues=) and memory backends needs fewer",
			n, used, GuestFdsEach, b.most)
	}
	return nil
}
