package engine

import (
	"encoding/json"
	"fmt"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/handover"
	"github.com/vknetd/vknetd/vhostuser"
)

// vhostRecord is a vhost-user port's handover.Port.Vhost: the device's
// state and where its fds are in the record's list.
type vhostRecord struct {
	Device  vhostuser.State `json:"device"`
	Regions []int           `json:"regions"`
	// Kick and Call: one per ring the device exported (vhostuser.State's
	// Queues), -1 for none.
	Kick []int `json:"kick"`
	Call []int `json:"call"`
}

// exportOther writes the state of a port of a transport the shared code
// does not know (vhost-user on Linux), or says why it cannot be handed over.
func (e *Engine) exportOther(p *port, hp *handover.Port, addFd func(int) int) error {
	t, ok := p.t.(*vhostTransport)
	if !ok {
		return fmt.Errorf("port %d (%s %s) cannot be handed over", p.id, p.caps.kind, p.name)
	}
	st, fds, err := t.dev.Export()
	if err != nil {
		return fmt.Errorf("port %d (%s): %w", p.id, p.name, err)
	}
	rec := vhostRecord{Device: st}
	hp.Fd = addFd(fds.Socket)
	for _, fd := range fds.Regions {
		rec.Regions = append(rec.Regions, addFd(fd))
	}
	for i := range st.Queues {
		rec.Kick = append(rec.Kick, addFd(fds.Kick[i]))
		rec.Call = append(rec.Call, addFd(fds.Call[i]))
	}
	hp.Vhost, err = json.Marshal(rec)
	return err
}

// adoptOther is exportOther backwards; after finishes the port once it is
// made and has joined its user.
func (l *loop) adoptOther(hp *handover.Port, fd int, claim func(int) (int, error)) (t transport, after func(*port) error, err error) {
	if hp.Kind != "vhost-user" || len(hp.Vhost) == 0 {
		return nil, nil, fmt.Errorf("a %s port cannot be adopted", hp.Kind)
	}
	var rec vhostRecord
	if err := json.Unmarshal(hp.Vhost, &rec); err != nil {
		return nil, nil, fmt.Errorf("vhost-user state: %w", err)
	}
	if len(rec.Regions) > 8 {
		return nil, nil, fmt.Errorf("vhost-user state: %d memory regions", len(rec.Regions))
	}
	if len(rec.Kick) > vhostuser.MaxQueues || len(rec.Call) != len(rec.Kick) {
		return nil, nil, fmt.Errorf("vhost-user state: %d kick and %d call fds", len(rec.Kick), len(rec.Call))
	}
	fds := vhostuser.NoFDs()
	fds.Socket = fd
	for _, i := range rec.Regions {
		r, err := claim(i)
		if err != nil || r < 0 {
			return nil, nil, fmt.Errorf("vhost-user memory region: %v", err)
		}
		fds.Regions = append(fds.Regions, r)
	}
	for q := range rec.Kick {
		if fds.Kick[q], err = claim(rec.Kick[q]); err != nil {
			return nil, nil, err
		}
		if fds.Call[q], err = claim(rec.Call[q]); err != nil {
			return nil, nil, err
		}
	}
	e := l.e
	vt := &vhostTransport{io: &l.io,
		bufs: make([][]byte, e.cfg.Batch), sizes: make([]int, e.cfg.Batch),
		hdrs: make([]gso.VirtioNetHdr, e.cfg.Batch)}
	mem := &guestMemory{budget: &e.guestMem}
	id, name := hp.ID, hp.Name
	offloads := e.cfg.Offloads && e.pool.CapLarge() > 0
	dev, err := vhostuser.Adopt(vhostuser.Config{Note: func(msg string) {
		e.clientLog.Info("vhost-user request ignored", "port", id, "client", name, "request", msg)
	}, Offloads: offloads, Large: vt.large, Memory: mem.set}, rec.Device, fds)
	if err != nil {
		return nil, nil, err
	}
	vt.dev = dev
	dev.SplitTX(splitHead)
	vt.offloads = dev.Offloads() != 0
	after = func(p *port) error {
		mem.joined(p.user)
		p.offloads = dev.Offloads()
		w := kickFDs(dev)
		if err := l.watch(p, &w); err != nil {
			return err
		}
		// Frames the guest posted while no one read wait in its rings,
		// and it may not kick for them again.
		if dev.Ready() {
			l.readNextRound(p)
		}
		return nil
	}
	return vt, after, nil
}
