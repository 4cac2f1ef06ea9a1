//go:build linux

package secure

import (
	"os"
	"testing"
	"time"

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
}

func dialVhost(t *testing.T, path string) *vhostClient {
	t.Helper()
	g, err := vhostguest.New(vhostguest.Options{})
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
	return &vhostClient{g: g, bufs: [][]byte{make([]byte, 10000)}, sizes: make([]int, 1)}
}

func (c *vhostClient) Send(t testing.TB, frame []byte) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); c.g.Send([][]byte{frame}, nil) != 1; {
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
