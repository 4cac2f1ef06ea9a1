package mactable

import (
	"testing"
	"time"
)

// TestRefreshHintOnlyTheOwnLiveMAC: RefreshHint refreshes a MAC through a
// hint only where Learn would have refreshed it, live on the same port;
// a MAC live on another port, an aged one or one the hint does not name
// is left as it is, and the call says false, so secure mode looks before
// it learns.
func TestRefreshHintOnlyTheOwnLiveMAC(t *testing.T) {
	tb := mustNew(t, defCfg)
	mac := Key([]byte{2, 0, 0, 0, 0, 1})
	now := int64(1 << 40)
	var h Hint
	if tb.RefreshHint(mac, 1, now, &h) {
		t.Fatal("the zero hint refreshed a MAC the table does not hold")
	}
	// A MAC asked for twice in a row is remembered (Hint).
	for range 2 {
		if r := tb.LearnHint(mac, 1, now, &h); r != Learned && r != Refreshed {
			t.Fatalf("LearnHint = %v", r)
		}
	}
	later := now + int64(2*tb.Granularity())
	if !tb.RefreshHint(mac, 1, later, &h) {
		t.Fatal("the port's own live MAC, hinted, was not refreshed")
	}
	// Refreshed: live a whole MaxAge after the refresh, not after the learn.
	if p, ok := tb.Lookup(mac, later+int64(defCfg.MaxAge)-int64(2*tb.Granularity())); !ok || p != 1 {
		t.Fatalf("after the refresh: Lookup = %d, %v; want port 1", p, ok)
	}
	if tb.RefreshHint(mac, 2, later, &h) {
		t.Fatal("another port's frame refreshed the MAC through the hint")
	}
	if p, ok := tb.Lookup(mac, later); !ok || p != 1 {
		t.Fatalf("after another port's try: Lookup = %d, %v; want port 1 still", p, ok)
	}
	aged := later + int64(defCfg.MaxAge) + int64(time.Second)
	if tb.RefreshHint(mac, 1, aged, &h) {
		t.Fatal("an aged MAC was refreshed through the hint")
	}
	if _, ok := tb.Lookup(mac, aged); ok {
		t.Fatal("an aged MAC is live again after RefreshHint said false")
	}
	other := Key([]byte{2, 0, 0, 0, 0, 2})
	if tb.RefreshHint(other, 1, later, &h) {
		t.Fatal("a MAC the hint does not name was refreshed")
	}
}
