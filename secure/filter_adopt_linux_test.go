package secure

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// dupFilter hands k's program and map over as an upgrading daemon does:
// as duplicates of its fds, for AdoptKernelFilter to own.
func dupFilter(t *testing.T, k *KernelFilter) (prog, drops int) {
	t.Helper()
	prog, err := unix.Dup(k.Program.FD())
	if err != nil {
		t.Fatal(err)
	}
	if drops, err = unix.Dup(k.Drops.FD()); err != nil {
		t.Fatal(err)
	}
	return prog, drops
}

// An adopted filter is the same program and counters: a socket the old
// filter counted keeps its count, a new socket is filtered and counted,
// and no program is loaded (the kernel's program id is the old one's).
func TestAdoptKernelFilterKeepsProgramAndCounts(t *testing.T) {
	p, err := New(testConfig(false))
	if err != nil {
		t.Fatal(err)
	}
	old, err := LoadKernelFilter(p, 8)
	if err != nil {
		loadTestFilter(t, false) // skips where BPF cannot be loaded
		t.Fatal(err)
	}
	defer old.Close()
	spoof := make([]byte, 60)
	spoof[6] = 0x01 // a multicast source MAC: the filter's first rule
	before := socketPair(t)
	cookie, err := old.Attach(before[0])
	if err != nil {
		t.Fatal(err)
	}
	if sendThrough(t, before, spoof) {
		t.Fatal("the old filter kept a spoofed frame")
	}

	prog, drops := dupFilter(t, old)
	k, err := AdoptKernelFilter(p, prog, drops)
	if err != nil {
		t.Fatalf("adopting: %v", err)
	}
	defer k.Close()
	if progID(t, k.Program) != progID(t, old.Program) {
		t.Error("the adopted filter loaded a program of its own")
	}
	if n, err := k.Dropped(cookie); err != nil || n != 1 {
		t.Errorf("the old socket's count through the adopted filter: %d, %v; want 1", n, err)
	}
	after := socketPair(t)
	newCookie, err := k.Attach(after[0])
	if err != nil {
		t.Fatal(err)
	}
	if sendThrough(t, after, spoof) || sendThrough(t, after, spoof) {
		t.Fatal("the adopted filter kept a spoofed frame on a new socket")
	}
	if n, _ := k.Dropped(newCookie); n != 2 {
		t.Errorf("the new socket's count: %d, want 2", n)
	}
}

// A program of other rules (here: another policy's, as a new binary's
// would be) is not used: the adopting daemon loads its own, counting in
// the adopted map so that counts go on.
func TestAdoptKernelFilterReplacesOtherRules(t *testing.T) {
	v4, err := New(testConfig(false))
	if err != nil {
		t.Fatal(err)
	}
	v6, err := New(testConfig(true))
	if err != nil {
		t.Fatal(err)
	}
	old, err := LoadKernelFilter(v4, 8)
	if err != nil {
		loadTestFilter(t, false)
		t.Fatal(err)
	}
	defer old.Close()
	prog, drops := dupFilter(t, old)
	k, err := AdoptKernelFilter(v6, prog, drops)
	if err != nil {
		t.Fatalf("adopting: %v", err)
	}
	defer k.Close()
	if same, err := k.builtFor(v6); err != nil || !same {
		t.Errorf("the adopting filter runs another program than the policy's (%v)", err)
	}
	if same, _ := old.builtFor(v6); same {
		t.Error("builtFor cannot tell two policies' programs apart")
	}
	if mapID(t, k.Drops) != mapID(t, old.Drops) {
		t.Error("the adopting filter made a new counter map: the counts would start again")
	}
}

// Anything but a socket filter and its counter map is refused.
func TestAdoptKernelFilterRefusesOtherObjects(t *testing.T) {
	p, err := New(testConfig(false))
	if err != nil {
		t.Fatal(err)
	}
	old, err := LoadKernelFilter(p, 8)
	if err != nil {
		loadTestFilter(t, false)
		t.Fatal(err)
	}
	defer old.Close()
	other, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	prog, _ := dupFilter(t, old)
	wrong, err := unix.Dup(other.FD())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := AdoptKernelFilter(p, prog, wrong); err == nil || !strings.Contains(err.Error(), "not a socket filter") {
		t.Errorf("adopting an array as the counters: %v", err)
	}
	notBPF, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	_, drops := dupFilter(t, old)
	if _, err := AdoptKernelFilter(p, notBPF, drops); err == nil {
		t.Error("adopted an eventfd as the program")
	}
}

func socketPair(t *testing.T) [2]int {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds
}

func progID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Skip("this kernel gives no program ids")
	}
	return id
}

func mapID(t *testing.T, m *ebpf.Map) ebpf.MapID {
	t.Helper()
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Skip("this kernel gives no map ids")
	}
	return id
}
