package main

import (
	"runtime"

	"github.com/vknetd/vknetd/engine"
	"github.com/vknetd/vknetd/internal/handover"
	"github.com/vknetd/vknetd/secure"
)

// loadKernelFilter loads secure mode's kernel half (secure.KernelFilter)
// for the engine to attach to client sockets, or says in one line why
// every frame is checked in userspace alone. It never fails the start:
// the userspace checker judges every frame either way, the filter only
// spares the daemon the frames it drops.
func (d *daemon) loadKernelFilter(policy *secure.Policy) engine.ClientFilter {
	switch {
	case d.o.unsecure, runtime.GOOS != "linux":
		// The BSDs have no eBPF socket filters: nothing to say.
		return nil
	case d.o.noBPF:
		d.log.Info("kernel filter off (--no-bpf): secure mode checks every frame in userspace alone")
		return nil
	}
	// One counter per socket it may filter: every client (SEQPACKET or
	// datagram) and the datagram listener, with room to spare.
	k, err := secure.LoadKernelFilter(policy, engine.MaxPorts(d.o.maxClients)+8)
	if err != nil {
		d.log.Warn("kernel filter unavailable: secure mode checks every frame in userspace alone", "err", err,
			"hint", "loading it needs root or CAP_BPF and a kernel with eBPF socket filters; --no-bpf turns it off without this warning")
		return nil
	}
	d.kfilter = k
	return k
}

// adoptKernelFilter takes over the filter the previous daemon hands over
// (fd maps the record's indices to this process's fds), so that clients
// that connect after an upgrade are filtered in the kernel too, although
// under --user this process may not load BPF, and the counts of the
// sockets it adopts go on. A previous daemon without a filter (--no-bpf,
// or it could not load one) hands none, and this one tries to load its
// own, as a first daemon does.
func (d *daemon) adoptKernelFilter(policy *secure.Policy, rec *handover.KernelFilter, fd func(int) int) engine.ClientFilter {
	if rec == nil {
		return d.loadKernelFilter(policy)
	}
	k, err := secure.AdoptKernelFilter(policy, fd(rec.Program), fd(rec.Drops))
	if err != nil {
		d.log.Warn("kernel filter not taken over: new clients are checked in userspace alone; the sockets adopted keep the previous daemon's filter", "err", err,
			"hint", "a binary whose filter differs needs root or CAP_BPF to load its own; restart the daemon to load it")
		return nil
	}
	d.kfilter = k
	return k
}

// closeKernelFilter unloads the filter; sockets still open keep it.
func (d *daemon) closeKernelFilter() {
	if d.kfilter == nil {
		return
	}
	if err := d.kfilter.Close(); err != nil {
		d.log.Error("unloading the kernel filter", "err", err)
	}
	d.kfilter = nil
}
