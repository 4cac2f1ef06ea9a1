package engine

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/hang"
	"github.com/vknetd/vknetd/internal/vhostguest"
)

// A vhost-user guest served by a worker loop (not the goroutine that
// called Run) that shrinks its memory file is closed for it, as on the
// first loop: every loop's goroutine turns the fault into an error
// (debug.SetPanicOnFault holds per goroutine). Without that the fault
// would end the whole process.
func TestWorkersGuestMemoryFaultOnWorkerLoop(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	e, path := vhostSwitch(t, false, withWorkers(2))
	a := startGuest(t, path, vhostguest.Options{})
	before := memfds(t)
	b := startGuest(t, path, vhostguest.Options{})
	var bmem []int
	for fd := range memfds(t) {
		if !before[fd] {
			bmem = append(bmem, fd)
		}
	}
	// The guest's own fd and the one the switch keeps for upgrades
	// (vhostuser's kept table): one file.
	if len(bmem) == 0 || !sameFile(t, bmem) {
		t.Fatalf("found %d new memory fds for the second guest, want those of one file", len(bmem))
	}
	// b (the second client: the second loop's) gives its memory back to
	// the system under the switch's mapping.
	if err := unix.Ftruncate(bmem[0], 0); err != nil {
		t.Fatal(err)
	}
	_ = b
	a.Send([][]byte{ethFrame(broadcast, mac(1), 0x0800, 60)}, nil) // flooded to b
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := e.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Clients == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest whose memory faulted is still connected: %+v", st.Ports)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// memfds are the process's open memory files (memfd_create), by fd.
func memfds(t *testing.T) map[int]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]bool{}
	for _, ent := range ents {
		target, err := os.Readlink("/proc/self/fd/" + ent.Name())
		if err != nil || !strings.HasPrefix(target, "/memfd:vhostguest") {
			continue
		}
		fd, _ := strconv.Atoi(ent.Name())
		out[fd] = true
	}
	return out
}

// sameFile says fds are all of one file.
func sameFile(t *testing.T, fds []int) bool {
	t.Helper()
	var first unix.Stat_t
	for i, fd := range fds {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = st
		} else if st.Dev != first.Dev || st.Ino != first.Ino {
			return false
		}
	}
	return true
}
