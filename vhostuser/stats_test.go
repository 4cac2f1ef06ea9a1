package vhostuser

import (
	"reflect"
	"testing"
)

// Every counter of a call's Stats reaches the device's: a counter added to
// Stats and forgotten in add would read zero for ever.
func TestStatsAddCountsEveryField(t *testing.T) {
	var call, total Stats
	v := reflect.ValueOf(&call).Elem()
	for i := 0; i < v.NumField(); i++ {
		v.Field(i).SetUint(uint64(i + 1))
	}
	total.add(&call)
	total.add(&call)
	w := reflect.ValueOf(total)
	for i := 0; i < w.NumField(); i++ {
		if got := w.Field(i).Uint(); got != 2*uint64(i+1) {
			t.Errorf("Stats.%s: %d after adding %d twice", w.Type().Field(i).Name, got, i+1)
		}
	}
}
