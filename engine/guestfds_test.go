package engine

import (
	"strings"
	"testing"
)

// TestGuestFdsShareWhatIsBeyondEach: guests share what the budget has
// beyond GuestFdsEach for every client; a guest asking past it is refused
// with what to do, one that stays within GuestFdsEach never is, however
// much others took, and closing gives back what a guest held.
func TestGuestFdsShareWhatIsBeyondEach(t *testing.T) {
	b := newGuestFdBudget(4*GuestFdsEach+10, 4) // 10 to share
	big := &guestFds{budget: &b}
	if err := big.set(GuestFdsEach + 10); err != nil {
		t.Fatalf("a guest taking the 10 to share: %v", err)
	}
	other := &guestFds{budget: &b}
	err := other.set(GuestFdsEach + 1)
	if err == nil || !strings.Contains(err.Error(), "raise the limit") || !strings.Contains(err.Error(), "--max-clients") {
		t.Fatalf("a second guest past the share: %v, want a refusal saying what to do", err)
	}
	other.set(0)
	for range 3 {
		small := &guestFds{budget: &b}
		if err := small.set(GuestFdsEach); err != nil {
			t.Fatalf("a guest of one queue pair after another took the share: %v", err)
		}
	}
	big.set(0)
	if err := other.set(GuestFdsEach + 10); err != nil {
		t.Fatalf("the share given back by a closed guest: %v", err)
	}
	if uncounted := newGuestFdBudget(0, 4); uncounted.most >= 0 {
		t.Fatalf("GuestFds 0 counts (most %d)", uncounted.most)
	}
}
