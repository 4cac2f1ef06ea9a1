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
	n := uint64(0)
	for i := 0; i < v.NumField(); i++ {
		// A counter, or an array of them (by queue pair).
		for _, f := range counterFields(v.Field(i)) {
			n++
			f.SetUint(n)
		}
	}
	total.add(&call)
	total.add(&call)
	w := reflect.ValueOf(total)
	n = 0
	for i := 0; i < w.NumField(); i++ {
		for j, f := range counterFields(w.Field(i)) {
			n++
			if got := f.Uint(); got != 2*n {
				t.Errorf("Stats.%s[%d]: %d after adding %d twice", w.Type().Field(i).Name, j, got, n)
			}
		}
	}
}

// counterFields is f itself, or the elements of f when it is an array.
func counterFields(f reflect.Value) []reflect.Value {
	if f.Kind() != reflect.Array {
		return []reflect.Value{f}
	}
	out := make([]reflect.Value, f.Len())
	for i := range out {
		out[i] = f.Index(i)
	}
	return out
}
