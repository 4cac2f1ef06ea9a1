package engine

import (
	"testing"

	"github.com/vknetd/vknetd/mactable"
)

// fakeFilter stands in for secure.KernelFilter: it records the sockets it
// was attached to and reports a drop count per cookie.
type fakeFilter struct {
	attached map[int]uint64 // fd -> cookie
	drops    map[uint64]uint64
	forgot   []uint64
}

func newFakeFilter() *fakeFilter {
	return &fakeFilter{attached: map[int]uint64{}, drops: map[uint64]uint64{}}
}

func (f *fakeFilter) Attach(fd int) (uint64, error) {
	c := uint64(1000 + fd)
	f.attached[fd] = c
	return c, nil
}

func (f *fakeFilter) Dropped(cookie uint64) (uint64, error) { return f.drops[cookie], nil }
func (f *fakeFilter) Forget(cookie uint64)                  { f.forgot = append(f.forgot, cookie) }

func kernelDrops(ps PortStats) uint64 {
	for _, d := range ps.Drops {
		if d.Reason == "kernel-filter" {
			return d.Count
		}
	}
	return 0
}

// In secure mode SEQPACKET clients get the kernel filter and its drops
// show on their port as kernel-filter, then in the departed totals once
// they leave; STREAM clients are not filtered by the kernel.
func TestKernelFilterAttachedToSeqpacketClients(t *testing.T) {
	f := newFakeFilter()
	s := newTestSwitch(t, true, mactable.Config{}, func(c *Config) { c.ClientFilter = f })
	a := s.connect()
	q := s.connectStream()
	cookie, ok := f.attached[a.port.fd]
	if !ok {
		t.Fatal("the SEQPACKET client's socket has no kernel filter")
	}
	if _, ok := f.attached[q.port.fd]; ok {
		t.Fatal("a STREAM client's socket got the kernel filter: the kernel never runs it there")
	}
	f.drops[cookie] = 7
	st := s.e.stats()
	for _, p := range st.Ports {
		want := uint64(0)
		if p.ID == a.port.id {
			want = 7
		}
		if got := kernelDrops(p); got != want {
			t.Errorf("port %d (%s): kernel-filter %d, want %d", p.ID, p.Kind, got, want)
		}
	}
	a.port.dead = true
	s.l.reap()
	if len(f.forgot) != 1 || f.forgot[0] != cookie {
		t.Errorf("forgot %v, want the closed client's cookie %d", f.forgot, cookie)
	}
	if got := kernelDrops(s.e.stats().Departed); got != 7 {
		t.Errorf("departed kernel-filter %d, want 7", got)
	}
}

// Without secure mode (-U) nothing is filtered in the kernel.
func TestKernelFilterNotAttachedWhenUnsecure(t *testing.T) {
	f := newFakeFilter()
	s := newTestSwitch(t, false, mactable.Config{}, func(c *Config) { c.ClientFilter = f })
	s.connect()
	if len(f.attached) != 0 {
		t.Fatalf("attached to %d sockets with -U", len(f.attached))
	}
}
