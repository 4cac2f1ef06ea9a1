package engine

import (
	"testing"

	"github.com/vknetd/vknetd/secure"
)

// No port reads more frames at once than the pool's guarantee counts a
// read as (readMax): a vhost-user guest reads vhostReadBudget only on a
// switch that serves vhost-user, and the pool is sized for it there.
func TestReadBudgetsStayWithinThePoolsRead(t *testing.T) {
	policy, err := secure.New(secure.Config{MaxBindings: 16})
	if err != nil {
		t.Fatal(err)
	}
	vhostListener := []Listener{{Fd: -1, Kind: Seqpacket}, {Fd: -1, Kind: VhostUser}}
	for _, c := range []struct {
		name                string
		batch               int
		vnet                bool
		listeners           []Listener
		readMax             int
		socket, vhost, tapV int
	}{
		{"sockets only", 32, false, []Listener{{Fd: -1, Kind: Seqpacket}}, 32, 32, 32, 32},
		{"vhost-user served", 32, false, vhostListener, vhostReadBudget, 32, vhostReadBudget, vhostReadBudget},
		{"a small batch", 2, false, vhostListener, vhostReadBudget, 2, vhostReadBudget, vhostReadBudget},
		{"TAP superframes", 32, true, nil, tapReadBudget, 32, vhostReadBudget, tapReadBudget},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := Config{TapFd: -1, MTU: 1500, MaxClients: 16, Policy: policy, Batch: c.batch, TapVnetHdr: c.vnet, Listeners: c.listeners}
			if err := cfg.check(); err != nil {
				t.Fatal(err)
			}
			e := &Engine{cfg: cfg, readMax: cfg.readMax()}
			if e.readMax != c.readMax {
				t.Errorf("readMax %d, want %d", e.readMax, c.readMax)
			}
			if got := e.readBudget(transportCaps{}); got != c.socket {
				t.Errorf("a socket's read %d, want %d", got, c.socket)
			}
			if got := e.readBudget(transportCaps{readBudget: vhostReadBudget}); got != c.vhost {
				t.Errorf("a vhost-user guest's read %d, want %d", got, c.vhost)
			}
			if got := e.readBudget(transportCaps{readBudget: tapReadBudget}); got != c.tapV {
				t.Errorf("the TAP's read %d, want %d", got, c.tapV)
			}
			if want := MaxPorts(cfg.MaxClients) * max(pressureBacklog, e.readMax); cfg.Buffers < want {
				t.Errorf("%d buffers, fewer than a read of %d for each of %d ports", cfg.Buffers, e.readMax, MaxPorts(cfg.MaxClients))
			}
		})
	}
}
