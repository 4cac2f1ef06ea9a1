package engine

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/vknetd/vknetd/mactable"
	"github.com/vknetd/vknetd/secure"
)

// TestGuestMemoryAccounting follows two users' guests through tables set,
// replaced, refused and released: each guest's, each user's and the
// daemon's counts always add up to the tables held, a refusal names the
// flag to raise, and nothing is left behind.
func TestGuestMemoryAccounting(t *testing.T) {
	const G = 1 << 30
	b := &guestMemoryBudget{perGuest: 4 * G, perUser: 6 * G, total: 10 * G}
	alice, bob := &user{uid: 1000}, &user{uid: 1001}
	newGuest := func(u *user) *guestMemory {
		m := &guestMemory{budget: b}
		m.joined(u)
		return m
	}
	check := func(step string, used, aliceHas, bobHas uint64) {
		t.Helper()
		if b.used != used || alice.guestMemory != aliceHas || bob.guestMemory != bobHas {
			t.Fatalf("%s: daemon %d, alice %d, bob %d; want %d, %d, %d", step,
				b.used, alice.guestMemory, bob.guestMemory, used, aliceHas, bobHas)
		}
	}
	refused := func(step string, err error, flag string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "raise "+flag) {
			t.Fatalf("%s: err = %v, want a refusal saying to raise %s", step, err, flag)
		}
	}

	a1, a2 := newGuest(alice), newGuest(alice)
	if err := a1.set(4 * G); err != nil {
		t.Fatalf("a table at the per-guest cap: %v", err)
	}
	refused("one guest over --vhost-memory-max", a2.set(4*G+4096), "--vhost-memory-max")
	check("after the refusal", 4*G, 4*G, 0)
	refused("alice over --user-vhost-memory", a2.set(3*G), "--user-vhost-memory")
	if err := a2.set(2 * G); err != nil {
		t.Fatalf("alice up to her cap: %v", err)
	}
	check("alice at her cap", 6*G, 6*G, 0)

	// A replaced table is counted instead of the old one, not beside it:
	// at her cap, alice may still send a4's table again, or a smaller one.
	if err := a1.set(4 * G); err != nil {
		t.Fatalf("the same table again, at the cap: %v", err)
	}
	if err := a1.set(1 * G); err != nil {
		t.Fatalf("a smaller table: %v", err)
	}
	check("a1 shrunk", 3*G, 3*G, 0)
	if err := a1.set(4 * G); err != nil {
		t.Fatalf("a1 grows back within the caps: %v", err)
	}

	// bob has his own user cap, and the daemon's total binds both.
	b1, b2 := newGuest(bob), newGuest(bob)
	if err := b1.set(4 * G); err != nil {
		t.Fatalf("bob's first guest: %v", err)
	}
	refused("the daemon over --vhost-memory-total", b2.set(1*G), "--vhost-memory-total")
	check("full", 10*G, 6*G, 4*G)

	// Closing releases; a guest that never mapped releases nothing.
	if err := a1.set(0); err != nil {
		t.Fatal(err)
	}
	if err := b2.set(0); err != nil {
		t.Fatal(err)
	}
	check("a1 closed", 6*G, 2*G, 4*G)
	if err := b2.set(2 * G); err != nil {
		t.Fatalf("room made by a1: %v", err)
	}
	for _, m := range []*guestMemory{a2, b1, b2} {
		if err := m.set(0); err != nil {
			t.Fatal(err)
		}
	}
	check("all closed", 0, 0, 0)
}

// TestGuestMemoryJoinedLate: a device that mapped before its port joined
// its user (not what addClient does, but cheap to keep right) is charged
// to the user when it joins, and released from it.
func TestGuestMemoryJoinedLate(t *testing.T) {
	b := &guestMemoryBudget{perGuest: 1 << 30, perUser: 1 << 30, total: 1 << 31}
	m := &guestMemory{budget: b}
	if err := m.set(1 << 20); err != nil {
		t.Fatal(err)
	}
	u := &user{uid: 7}
	m.joined(u)
	if u.guestMemory != 1<<20 {
		t.Fatalf("user charged %d, want %d", u.guestMemory, 1<<20)
	}
	m.set(0)
	if u.guestMemory != 0 || b.used != 0 {
		t.Fatalf("after release: user %d, daemon %d", u.guestMemory, b.used)
	}
}

func TestSizeString(t *testing.T) {
	for n, want := range map[uint64]string{
		100: "100 bytes", 4096: "4 KiB", 64 << 30: "64 GiB", 1 << 40: "1 TiB",
		1<<40 + 4096: "1.00 TiB (1099511631872 bytes)", 3 << 29: "1.50 GiB (1610612736 bytes)",
	} {
		if got := sizeString(n); got != want {
			t.Errorf("sizeString(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestGuestMemoryCapsChecked: the engine refuses caps out of order.
func TestGuestMemoryCapsChecked(t *testing.T) {
	cfg := testConfigForCaps(t)
	cfg.GuestMemoryMax, cfg.UserGuestMemory = 2<<40, 1<<40
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "--vhost-memory-max") {
		t.Fatalf("New = %v, want an error naming --vhost-memory-max", err)
	}
	cfg = testConfigForCaps(t)
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.loops[0].closePoller()
	if g := &e.guestMem; g.perGuest != 1<<40 || g.total != 64<<40 || g.perUser != 16<<40 {
		t.Fatalf("default caps: per guest %d, per user %d, total %d", g.perGuest, g.perUser, g.total)
	}
}

func testConfigForCaps(t *testing.T) Config {
	policy, err := secure.New(secure.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return Config{TapFd: -1, MTU: 1500, Policy: policy, Logger: quietLogger(), MaxClients: 4,
		MACTable: mactable.Config{Capacity: 64, PortLimit: 8, MaxAge: time.Minute}}
}

// TestGuestMemoryRandomTables drives many guests of a few users through
// random tables (as the hostile front-ends' 11,000 SET_MEM_TABLEs did),
// refusals and closes: the caps always hold, every count is the sum of
// what is held, and everything closes back to zero.
func TestGuestMemoryRandomTables(t *testing.T) {
	const M = 1 << 20
	b := &guestMemoryBudget{perGuest: 64 * M, perUser: 160 * M, total: 400 * M}
	users := []*user{{uid: 1}, {uid: 2}, {uid: 3}, {uid: 4}}
	guests := make([]*guestMemory, 24)
	for i := range guests {
		guests[i] = &guestMemory{budget: b}
		guests[i].joined(users[i%len(users)])
	}
	rng := rand.New(rand.NewPCG(15, 3))
	refusals := 0
	for step := 0; step < 20000; step++ {
		g := guests[rng.IntN(len(guests))]
		want := uint64(rng.IntN(80)) * M
		if rng.IntN(8) == 0 {
			want = 0 // a close, or a table that failed half way
		}
		err := g.set(want)
		if err != nil {
			refusals++
			if want <= g.held {
				t.Fatalf("step %d: a table that does not grow (%d, held %d) was refused: %v", step, want, g.held, err)
			}
		}
		var sum uint64
		perUser := map[*user]uint64{}
		for _, g := range guests {
			if g.held > b.perGuest {
				t.Fatalf("step %d: a guest holds %d, over its cap", step, g.held)
			}
			sum += g.held
			perUser[g.user] += g.held
		}
		for _, u := range users {
			if u.guestMemory != perUser[u] || u.guestMemory > b.perUser {
				t.Fatalf("step %d: uid %d counted %d, its guests hold %d (cap %d)", step, u.uid, u.guestMemory, perUser[u], b.perUser)
			}
		}
		if b.used != sum || sum > b.total {
			t.Fatalf("step %d: daemon counted %d, guests hold %d (cap %d)", step, b.used, sum, b.total)
		}
	}
	if refusals == 0 {
		t.Fatal("no table was ever refused: the caps were not exercised")
	}
	for _, g := range guests {
		g.set(0)
	}
	if b.used != 0 {
		t.Fatalf("%d bytes counted after every guest closed", b.used)
	}
}
