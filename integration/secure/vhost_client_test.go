//go:build linux

package secure

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/vhostguest"
)

// frameClient is a client of the switch that sends and receives whole
// frames, whatever its transport.
type frameClient interface {
	Send(t testing.TB, frame []byte)
	Recv(timeout time.Duration) ([]byte, error)
}

// vhostClient is a vhost-user guest played by this process (package
// vhostguest): the same frames as a SEQPACKET client, on virtio rings in
// memory shared with the switch.
type vhostClient struct {
	g     *vhostguest.Guest
	bufs  [][]byte
	sizes []int
	// offloads: TCP and UDP frames go with a header asking the switch to
	// finish their checksum (TSO for TCP, one segment), where the frame
	// allows it unchanged otherwise; offloaded counts them.
	offloads  bool
	offloaded int
	hdr       []gso.VirtioNetHdr
}

func dialVhost(t *testing.T, path string, offloads bool) *vhostClient {
	t.Helper()
	g, err := vhostguest.New(vhostguest.Options{Offloads: offloads})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	var fd int
	for deadline := time.Now().Add(5 * time.Second); ; {
		if fd, err = vhostguest.Dial(path); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	g.Attach(fd)
	if err := g.Start(); err != nil {
		t.Fatalf("vhost-user guest: %v", err)
	}
	g.PostRX(1 << 16)
	if send, _ := g.Offloads(); offloads && send&gso.OffloadTSO4 == 0 {
		t.Fatalf("the guest asked for offloads and may send none (%#x)", send)
	}
	return &vhostClient{g: g, bufs: [][]byte{make([]byte, 70000)}, sizes: make([]int, 1),
		offloads: offloads, hdr: make([]gso.VirtioNetHdr, 1)}
}

// offloadHeader is the header a guest with offloads would send frame
// with, and frame as it would send it (its L4 checksum field holding the
// pseudo-header sum), or ok false where that would change anything else
// the policy judges (an IPv4 checksum made good, a malformed frame): such
// frames go plain, so each attack is still dropped for its own reason.
func offloadHeader(frame []byte) (gso.VirtioNetHdr, []byte, bool) {
	h := gso.VirtioNetHdr{GSOType: gso.GSOTCPv4, GSOSize: 1448}
	if len(frame) > 14 && frame[12] == 0x86 && frame[13] == 0xdd {
		h.GSOType = gso.GSOTCPv6
	}
	for _, t := range []gso.GSOType{h.GSOType, gso.GSONone} {
		h.GSOType = t
		if t == gso.GSONone {
			h.GSOSize = 0
		}
		f := append([]byte(nil), frame...)
		if gso.PartialChecksum(f, &h) != nil || gso.Check(f, h, 1500) != gso.OK {
			continue
		}
		// Nothing but the L4 checksum field may differ (an IPv4
		// header checksum made good would change the verdict).
		at := int(h.CsumStart + h.CsumOffset)
		if !bytes.Equal(f[:at], frame[:at]) || !bytes.Equal(f[at+2:], frame[at+2:]) {
			return gso.VirtioNetHdr{}, nil, false
		}
		return h, f, true
	}
	return gso.VirtioNetHdr{}, nil, false
}

func (c *vhostClient) Send(t testing.TB, frame []byte) {
	t.Helper()
	var hdrs []gso.VirtioNetHdr
	if c.offloads {
		if h, f, ok := offloadHeader(frame); ok {
			c.hdr[0], frame, hdrs = h, f, c.hdr
			c.offloaded++
		}
	}
	for deadline := time.Now().Add(5 * time.Second); c.g.Send([][]byte{frame}, hdrs) != 1; {
		if time.Now().After(deadline) {
			t.Fatal("the switch took no frame from the guest's TX ring for 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

func (c *vhostClient) Recv(timeout time.Duration) ([]byte, error) {
	for deadline := time.Now().Add(timeout); ; {
		if c.g.Receive(c.bufs, c.sizes, nil) == 1 {
			c.g.PostRX(1 << 16)
			return append([]byte(nil), c.bufs[0][:c.sizes[0]]...), nil
		}
		if time.Now().After(deadline) {
			return nil, os.ErrDeadlineExceeded
		}
		time.Sleep(200 * time.Microsecond)
	}
}
