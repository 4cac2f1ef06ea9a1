package engine

import (
	"fmt"
	"sync"
)

// Users. Limits that only follow the port let one user with many
// connections take what every port may take, times his connections: fill
// the MAC table, or every client slot. So every client port also belongs
// to the user who connected it (SO_PEERCRED, or a datagram's
// SCM_CREDENTIALS), and a user's ports share two limits: clients connected
// at once (Config.UserClients, --user-clients) and MAC addresses learned
// (mactable's OwnerLimit, --user-macs), and vhost-user guests share the
// guest memory they may have the switch map (--user-vhost-memory). In
// secure mode the policy knows the owner too: a user's clients share an
// IP address quota (--user-ips) and may have address ranges of their own
// (--user-net). The TAP and monitors belong to no user.

// user is one uid with connected clients. Its slot is its owner number in
// the MAC table: 1 and up, 0 being no owner.
type user struct {
	uid   int32
	slot  uint32
	ports int
	// guestMemory is what the user's vhost-user guests map, in bytes
	// (guestmem.go).
	guestMemory uint64
}

// userTable is the users with clients connected, by uid, and the owner
// numbers (slots) free for the next ones.
type userTable struct {
	// mu guards the table and its users' ports: the first loop joins
	// users, and any loop's closing port leaves one.
	mu        sync.Mutex
	byUID     map[int32]*user
	freeSlots []uint32
}

func newUserTable(maxPorts int) *userTable {
	t := &userTable{byUID: make(map[int32]*user)}
	for slot := maxPorts - 1; slot >= 1; slot-- {
		t.freeSlots = append(t.freeSlots, uint32(slot))
	}
	return t
}

// joinUser counts p against its user (p.uid), whom userRoom has let in,
// and makes that user p's owner in the MAC table.
func (e *Engine) joinUser(p *port) {
	t := e.users
	t.mu.Lock()
	defer t.mu.Unlock()
	u := t.byUID[p.uid]
	if u == nil {
		u = &user{uid: p.uid, slot: t.freeSlots[len(t.freeSlots)-1]}
		t.freeSlots = t.freeSlots[:len(t.freeSlots)-1]
		t.byUID[p.uid] = u
	}
	u.ports++
	p.user = u
	e.macs.SetOwner(p.id, u.slot)
	e.policy.SetOwner(p.id, u.slot, u.uid)
}

// leaveUser undoes joinUser when p closes, after its MACs are gone (and
// before its IP bindings are: each binding remembers the user it counts
// against).
func (e *Engine) leaveUser(p *port) {
	u := p.user
	if u == nil {
		return
	}
	e.users.mu.Lock()
	defer e.users.mu.Unlock()
	p.user = nil
	e.macs.SetOwner(p.id, 0)
	e.policy.SetOwner(p.id, 0, 0)
	if u.ports--; u.ports == 0 {
		delete(e.users.byUID, u.uid)
		e.users.freeSlots = append(e.users.freeSlots, u.slot)
	}
}

// userRoom says whether uid may connect one more client, for refusing
// before a port is made.
func (e *Engine) userRoom(uid int32) error {
	e.users.mu.Lock()
	defer e.users.mu.Unlock()
	if u := e.users.byUID[uid]; u != nil && u.ports >= e.cfg.UserClients {
		return fmt.Errorf("uid %d already has %d clients connected: raise --user-clients", uid, u.ports)
	}
	return nil
}
