package testbed

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

func netnsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// Do runs in the namespace, and a socket made there reaches a listener on
// the namespace's loopback from the test's goroutine afterwards.
func TestDoRunsInsideTheNamespace(t *testing.T) {
	n := NewNetns(t)
	want := netnsInode(t, "/run/netns/"+n.Name)
	var ln net.Listener
	if err := n.Do(func() (err error) {
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return err
		}
		if st.Ino != want {
			t.Errorf("Do ran in network namespace %d, want %s's %d", st.Ino, n.Name, want)
		}
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got := netnsInode(t, "/proc/thread-self/ns/net"); got == want {
		t.Fatal("the test's own thread is in the test namespace")
	}
	var c net.Conn
	if err := n.Do(func() (err error) {
		c, err = net.Dial("tcp", ln.Addr().String())
		return err
	}); err != nil {
		t.Fatalf("dial %s inside %s: %v", ln.Addr(), n.Name, err)
	}
	c.Close()
}
