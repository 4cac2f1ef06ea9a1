package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/hang"
	"github.com/vknetd/vknetd/internal/testbed"
	"github.com/vknetd/vknetd/tap"
	"github.com/vknetd/vknetd/vhostuser"
)

// plugEnd is one namespace plugged in with the loop over a real TAP with
// offloads, its vhost-user device in this process.
type plugEnd struct {
	ns    *testbed.Netns
	dev   *tap.Device
	l     *loop
	d     *vhostuser.Device
	large largeBuffers
	fwd   forwarder
}

func newPlugEnd(t *testing.T, addr string) *plugEnd {
	e := &plugEnd{ns: testbed.NewNetns(t)}
	e.ns.DisableIPv6(t) // only the test's traffic crosses
	err := e.ns.Do(func() error {
		var err error
		e.dev, err = tap.Open(tap.Config{Name: "vkoff0", MTU: 1500, Prefix: mustPrefix(t, addr), Offload: true})
		return err
	})
	if err != nil {
		t.Fatalf("opening a TAP in %s: %v", e.ns.Name, err)
	}
	t.Cleanup(func() { e.dev.Close() })
	if !e.dev.VnetHdr() {
		t.Skipf("the TAP has no virtio_net_hdr: %s", e.dev.OffloadNote())
	}
	for range superBatchSize {
		e.large.bufs = append(e.large.bufs, make([]byte, gso.MaxFrameLen))
	}
	var v *vhostLink
	e.d, v = vhostDevice(t, vhostuser.Config{Offloads: true, Large: e.large.get}, true)
	if e.l, err = newLoop(e.dev.Fd(), e.dev.Name(), v, 1518, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.l.close)
	e.fwd = newForwarder(64)
	return e
}

func mustPrefix(t *testing.T, s string) netip.Prefix {
	p, err := parsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// forwarder is one direction of a two-port switch: frames read from one
// device, with their headers, and not yet written to the other.
type forwarder struct {
	small, bufs   [][]byte
	sizes         []int
	hdrs          []gso.VirtioNetHdr
	frames        [][]byte
	head, n       int
	supers, csums uint64 // superframes and partial checksums that crossed
	bad           []string
}

func newForwarder(n int) forwarder {
	f := forwarder{small: make([][]byte, n), bufs: make([][]byte, n), sizes: make([]int, n),
		hdrs: make([]gso.VirtioNetHdr, n), frames: make([][]byte, n)}
	for i := range f.small {
		f.small[i] = make([]byte, 2048)
	}
	return f
}

// step moves what it can from one end's device to the other's, headers
// as they are: both guests take every offload the other sends.
func (f *forwarder) step(from, to *plugEnd) error {
	if f.head == f.n {
		from.large.next = 0
		copy(f.bufs, f.small)
		n, _, err := from.d.ReadTX(f.bufs, f.sizes, f.hdrs)
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			f.frames[i] = f.bufs[i][:f.sizes[i]]
			if f.hdrs[i].GSOType != gso.GSONone {
				f.supers++
			} else if f.hdrs[i].Flags&gso.FlagNeedsCsum != 0 {
				f.csums++
			}
			if r := gso.Check(f.frames[i], f.hdrs[i], 1500); r != gso.OK && len(f.bad) < 5 {
				f.bad = append(f.bad, r.String())
			}
		}
		f.head, f.n = 0, n
	}
	if f.head < f.n {
		k, err := to.d.WriteRX(f.frames[f.head:f.n], f.hdrs[f.head:f.n])
		if err != nil {
			return err
		}
		f.head += k
	}
	return nil
}

// TestPlugTAPOffloadsTCP: two namespaces, each with a real TAP with
// offloads and the plug's loop as a vhost-user guest, joined by a
// two-port switch in this test that passes frames and headers as they
// are. TCP between them sends 64 KiB superframes both ways (the data
// one way, its echo the other); the kernel at each end takes what the
// other's made, and the bytes come back intact.
func TestPlugTAPOffloadsTCP(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	a := newPlugEnd(t, "198.18.0.2/16")
	b := newPlugEnd(t, "198.18.0.3/16")

	stop, done := make(chan struct{}), make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			for _, step := range []func() error{
				func() error { return a.l.once(0) }, func() error { return b.l.once(0) },
				func() error { return a.fwd.step(a, b) }, func() error { return b.fwd.step(b, a) },
			} {
				if err := step(); err != nil {
					done <- err
					return
				}
			}
		}
	}()
	var stopOnce sync.Once
	halt := func() error {
		var err error
		stopOnce.Do(func() { close(stop); err = <-done })
		return err
	}
	t.Cleanup(func() { halt() })

	var ln net.Listener
	if err := b.ns.Do(func() (err error) { ln, err = net.Listen("tcp4", "198.18.0.3:5001"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // echo
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	var c net.Conn
	if err := a.ns.Do(func() (err error) { c, err = net.DialTimeout("tcp4", "198.18.0.3:5001", 5*time.Second); return err }); err != nil {
		t.Fatalf("connecting across the plugs: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	want := make([]byte, 32<<20)
	for i := range want {
		want[i] = byte(i*7 + i>>11)
	}
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		c.(*net.TCPConn).CloseWrite()
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, unix.ECONNRESET) {
		t.Fatalf("reading the echo: %v (%d bytes)", err, len(got))
	}
	if err := <-werr; err != nil {
		t.Fatalf("sending: %v", err)
	}
	if err := halt(); err != nil {
		t.Fatalf("the plugs' loops or the test switch: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%d bytes came back of %d sent, or different ones", len(got), len(want))
	}
	t.Logf("a -> b: %d superframes, %d partial checksums; b -> a: %d, %d; loop counters a %+v, b %+v",
		a.fwd.supers, a.fwd.csums, b.fwd.supers, b.fwd.csums, a.l.st, b.l.st)
	if a.fwd.supers == 0 || b.fwd.supers == 0 {
		t.Fatal("no superframe crossed one of the ways: the TAPs' offloads did not reach the link")
	}
	if len(a.fwd.bad)+len(b.fwd.bad) > 0 {
		t.Fatalf("headers that do not describe their frames: %v %v", a.fwd.bad, b.fwd.bad)
	}
	if st := a.l.st; st.tapRefused+st.tapTooLong != 0 {
		t.Fatalf("plug a dropped frames: %+v", st)
	}
	if st := b.l.st; st.tapRefused+st.tapTooLong != 0 {
		t.Fatalf("plug b dropped frames: %+v", st)
	}
}
