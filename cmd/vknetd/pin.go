package main

import "time"

// pinInterval is how often the clients' MACs are pinned in the host's
// bridge: a client's new MAC is unpinned for at most this long. A MAC that
// moved with its VM (engine.MACMoved) is synced at once: one that went to
// another host would otherwise hold the host's frames for it on the TAP.
const pinInterval = time.Second

// pinClientMACs keeps the MACs live on client ports pinned on the TAP's
// bridge port (tap.Device.PinLocal) until stop is closed, so that a frame
// from the underlay with a client's MAC cannot have the host's own bridge
// send the host's frames for that client out to the underlay. It closes
// done when it has stopped. A failure is logged when it starts, not every
// second.
func (d *daemon) pinClientMACs(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(pinInterval)
	defer tick.Stop()
	var macs [][6]byte
	failing := false
	for {
		macs = d.engine.ClientMACs(macs[:0])
		err := d.tap.PinLocal(macs)
		if err != nil && !failing {
			d.log.Warn("pinning the clients' MACs on the TAP's bridge port failed: a frame from the bridge's other ports with a client's MAC can divert the host's frames for that client until it sends again",
				"bridge", d.tap.Bridge(), "err", err)
		}
		failing = err != nil
		select {
		case <-stop:
			return
		case <-tick.C:
		case <-d.engine.MACMoved():
		}
	}
}
