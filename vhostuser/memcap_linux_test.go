package vhostuser

import (
	"encoding/binary"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// memoryLedger is a Config.Memory that records every call and refuses
// tables over cap.
type memoryLedger struct {
	cap   uint64
	held  uint64
	calls []uint64
}

func (l *memoryLedger) set(b uint64) error {
	l.calls = append(l.calls, b)
	if b > l.cap {
		return errors.New("over the test's cap: raise --vhost-memory-max")
	}
	l.held = b
	return nil
}

// readNote reads what the device wrote on the front-end's side b and
// returns the refusal note's text; it fails the test if there is none.
func readNote(t *testing.T, b int) string {
	t.Helper()
	var buf [12 + MaxRefusalLen + 64]byte
	n, _, err := unix.Recvfrom(b, buf[:], unix.MSG_DONTWAIT)
	if err != nil || n < 12 {
		t.Fatalf("no refusal note on the front-end's socket: %d bytes, %v", n, err)
	}
	req, flags, size := binary.LittleEndian.Uint32(buf[0:]), binary.LittleEndian.Uint32(buf[4:]), binary.LittleEndian.Uint32(buf[8:])
	if req != RefusalRequest || flags != flagVersion1|flagReply || int(size) != n-12 {
		t.Fatalf("note header req %#x flags %#x size %d (read %d bytes)", req, flags, size, n)
	}
	return string(buf[12:n])
}

// mappings counts the lines of /proc/self/maps naming the test's memfds.
func mappings(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "/memfd:test ")
}

// TestMemoryBudget: Config.Memory is asked, before anything is mapped,
// for the whole table as it will be mapped (sizes rounded up to pages);
// a replaced table is counted instead of the old one; a table it refuses
// maps nothing and closes the guest with a violation and a note that
// say why; a table that fails to map half way, and Close, release it all.
func TestMemoryBudget(t *testing.T) {
	const v1, page = 1, 4096
	l := &memoryLedger{cap: 1 << 30}
	a, b := socketpair(t)
	defer unix.Close(b)
	d, err := NewDevice(a, Config{Memory: l.set})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	table := func(sizes ...uint64) error {
		t.Helper()
		regs := make([]Region, len(sizes))
		fds := make([]int, len(sizes))
		for i, s := range sizes {
			regs[i] = Region{GuestAddr: uint64(i) << 32, Size: s, UserAddr: uint64(i) << 33}
			fds[i] = memfd(t, int(s))
		}
		send(t, b, msg(5, v1, memTable(regs...)), fds...)
		for _, fd := range fds {
			unix.Close(fd)
		}
		_, err := d.HandleSocket()
		return err
	}
	before := mappings(t)

	if err := table(1<<20, page+1); err != nil {
		t.Fatal(err)
	}
	if want := []uint64{1<<20 + 2*page}; !slices.Equal(l.calls, want) {
		t.Fatalf("Memory calls %v, want %v (the second region rounded up to its mapping)", l.calls, want)
	}
	if got := mappings(t) - before; got != 2 {
		t.Fatalf("%d regions mapped, want 2", got)
	}
	// A replacement is the new total, not the old plus the new.
	if err := table(512 << 10); err != nil {
		t.Fatal(err)
	}
	if l.held != 512<<10 || mappings(t)-before != 1 {
		t.Fatalf("after replacing: held %d, %d mappings; want %d, 1", l.held, mappings(t)-before, 512<<10)
	}

	// Refused: nothing more mapped, the old table stays until Close, and
	// the front-end reads why.
	err = table(1<<29, 1<<29, 1<<20)
	if !errors.Is(err, ErrViolation) || !strings.Contains(err.Error(), "raise --vhost-memory-max") {
		t.Fatalf("err = %v, want a violation saying what to raise", err)
	}
	if note := readNote(t, b); note != err.Error() {
		t.Fatalf("note %q, want the violation %q", note, err.Error())
	}
	if mappings(t)-before != 1 || l.held != 512<<10 {
		t.Fatalf("after the refusal: %d mappings, held %d; want 1, %d", mappings(t)-before, l.held, 512<<10)
	}
	d.Close()
	if l.held != 0 || mappings(t) != before {
		t.Fatalf("after Close: held %d, %d mappings left", l.held, mappings(t)-before)
	}
}

// TestMemoryBudgetFailedHalfWay: a table whose second region cannot be
// mapped (a write-sealed memfd passes every check but mmap's) releases
// what it reserved and the old table too: nothing mapped, nothing held.
func TestMemoryBudgetFailedHalfWay(t *testing.T) {
	const v1 = 1
	l := &memoryLedger{cap: 1 << 30}
	a, b := socketpair(t)
	defer unix.Close(b)
	d, err := NewDevice(a, Config{Memory: l.set})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	before := mappings(t)
	good := memfd(t, 1<<20)
	send(t, b, msg(5, v1, memTable(Region{Size: 1 << 20, UserAddr: 1 << 30})), good)
	if _, err := d.HandleSocket(); err != nil {
		t.Fatal(err)
	}
	sealed, err := unix.MemfdCreate("test", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(sealed, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(sealed), unix.F_ADD_SEALS, unix.F_SEAL_WRITE); err != nil {
		t.Fatal(err)
	}
	send(t, b, msg(5, v1, memTable(Region{Size: 1 << 20, UserAddr: 1 << 30}, Region{GuestAddr: 1 << 20, Size: 1 << 20, UserAddr: 1 << 31})), good, sealed)
	unix.Close(good)
	unix.Close(sealed)
	_, err = d.HandleSocket()
	if !errors.Is(err, ErrViolation) || !strings.Contains(err.Error(), "memory region 1: mmap") {
		t.Fatalf("err = %v, want region 1's mmap failing", err)
	}
	if want := []uint64{1 << 20, 2 << 20, 0}; !slices.Equal(l.calls, want) {
		t.Fatalf("Memory calls %v, want %v", l.calls, want)
	}
	if mappings(t) != before {
		t.Fatalf("%d mappings left after the failed table", mappings(t)-before)
	}
	readNote(t, b)
	d.Close()
	if len(l.calls) != 3 {
		t.Fatalf("Close called Memory again after the device let go: %v", l.calls)
	}
}
