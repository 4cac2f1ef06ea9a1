package tap

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

var nsSeq atomic.Int32

// testNS is a fresh network namespace the test goroutine's OS thread has
// been moved into; everything the test creates lives and dies there.
type testNS struct {
	name string
	h    *netlink.Handle
}

// enterNetns locks the calling goroutine to its thread, moves the thread
// into a new named namespace vkt-tap-<pid>-<n>, and undoes both (deleting
// the namespace and all it holds) when the test ends. t.Cleanup runs on the
// test's goroutine, hence on the same locked thread. Do not call t.Run or
// start goroutines expecting them to share the namespace: they run on other
// threads.
func enterNetns(t *testing.T) *testNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, TAPs and bridges")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get current netns: %v", err)
	}
	name := fmt.Sprintf("vkt-tap-%d-%d", os.Getpid(), nsSeq.Add(1))
	ns, err := netns.NewNamed(name)
	if err != nil {
		// NewNamed may have switched the thread before failing; a thread
		// that cannot go back stays locked and dies with the goroutine.
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		orig.Close()
		t.Fatalf("create netns %s: %v", name, err)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	tn := &testNS{name: name, h: h}
	t.Cleanup(func() {
		if h != nil {
			h.Close()
		}
		if err := netns.Set(orig); err != nil {
			t.Errorf("return to the original netns: %v", err)
		} else {
			runtime.UnlockOSThread()
		}
		orig.Close()
		ns.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	return tn
}

// ip runs ip(8) inside the test namespace, so the fixtures are made by a
// tool other than the code under test.
func (n *testNS) ip(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", n.name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func (n *testNS) link(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := n.h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l
}

func (n *testNS) gone(t *testing.T, name string) {
	t.Helper()
	l, err := n.h.LinkByName(name)
	if err == nil {
		t.Errorf("link %s (%s) still exists", name, l.Type())
		return
	}
	var nf netlink.LinkNotFoundError
	if !errors.As(err, &nf) {
		t.Errorf("link %s: %v, want not found", name, err)
	}
}

// linkNames lists every link in the namespace, to show nothing was left.
func (n *testNS) linkNames(t *testing.T) []string {
	t.Helper()
	links, err := n.h.LinkList()
	if err != nil {
		t.Fatalf("list links: %v", err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}

func (n *testNS) v4Addrs(t *testing.T, l netlink.Link) []string {
	t.Helper()
	addrs, err := n.h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("addresses of %s: %v", l.Attrs().Name, err)
	}
	var s []string
	for _, a := range addrs {
		s = append(s, a.IPNet.String())
	}
	return s
}
