package engine

import (
	"fmt"
	"math/bits"
	"sync"
)

// Guest memory. A vhost-user guest hands the switch its memory table and
// the switch maps it: address space the guest chooses, at no cost to it (a
// sparse memfd of 1 TiB costs nothing until touched). Left alone, one
// user's guests could map the daemon's whole address space, and the next
// legitimate guest's mmap would fail. So what each connection maps is
// charged, before anything is mapped, against three caps: one guest's
// (Config.GuestMemoryMax, --vhost-memory-max), all of one user's guests'
// (Config.UserGuestMemory, --user-vhost-memory; users as in users.go) and
// all guests' (Config.GuestMemoryTotal, --vhost-memory-total), which
// stays below the address space so the daemon and a new guest can always
// map.

// Defaults of the caps. 1 TiB fits large VMs (and is the most one region
// may be); 64 TiB is half of x86-64's 128 TiB of user address space,
// leaving the other half to the daemon, its heap and pool, and a table
// being replaced (mapped beside the old one for an instant).
const (
	defaultGuestMemoryMax   = 1 << 40
	defaultGuestMemoryTotal = 64 << 40
)

// guestMemoryBudget is the caps and what all guests map now.
type guestMemoryBudget struct {
	perGuest, perUser, total uint64
	// mu guards used and the users' guestMemory: guests on several loops
	// change their tables.
	mu   sync.Mutex
	used uint64
}

// guestMemory is one vhost-user port's account: the mapping bytes its
// device holds, charged to its user (set when the port joins it) and to
// the budget. Its set is the device's Config.Memory.
type guestMemory struct {
	budget *guestMemoryBudget
	user   *user
	held   uint64
}

// set makes the account hold bytes instead of what it held: a new memory
// table replaces the old one, 0 releases it. Growing past a cap is
// refused, with what to raise; shrinking never fails.
func (m *guestMemory) set(bytes uint64) error {
	b := m.budget
	b.mu.Lock()
	defer b.mu.Unlock()
	if bytes > m.held {
		grow := bytes - m.held
		switch {
		case bytes > b.perGuest:
			return fmt.Errorf("the table maps %s, over --vhost-memory-max %s for one guest: raise --vhost-memory-max to at least the guest's RAM",
				sizeString(bytes), sizeString(b.perGuest))
		case m.user != nil && m.user.guestMemory+grow > b.perUser:
			return fmt.Errorf("the table maps %s, and uid %d's other guests map %s: over --user-vhost-memory %s for one user's guests: raise --user-vhost-memory, or stop one of that user's guests",
				sizeString(bytes), m.user.uid, sizeString(m.user.guestMemory-m.held), sizeString(b.perUser))
		case b.used+grow > b.total:
			return fmt.Errorf("the table maps %s, and the other guests map %s: over --vhost-memory-total %s for all guests: raise --vhost-memory-total (below the daemon's address space), or stop a guest",
				sizeString(bytes), sizeString(b.used-m.held), sizeString(b.total))
		}
	}
	b.used = b.used - m.held + bytes
	if m.user != nil {
		m.user.guestMemory = m.user.guestMemory - m.held + bytes
	}
	m.held = bytes
	return nil
}

// joined charges what the account holds to u, the user its port joined.
func (m *guestMemory) joined(u *user) {
	m.budget.mu.Lock()
	defer m.budget.mu.Unlock()
	m.user = u
	u.guestMemory += m.held
}

// sizeString writes a byte count as people give it, "64 GiB", "1 TiB",
// and, when it is not a whole unit, with the exact count beside it: a
// table just over a cap must not read as equal to it.
func sizeString(n uint64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d bytes", n)
	}
	u := (bits.Len64(n) - 1) / 10 // 1 for KiB, 2 for MiB, ...
	whole := n >> (10 * u)
	if n&(1<<(10*u)-1) == 0 {
		return fmt.Sprintf("%d %ciB", whole, units[u-1])
	}
	return fmt.Sprintf("%.2f %ciB (%d bytes)", float64(n)/float64(uint64(1)<<(10*u)), units[u-1], n)
}
