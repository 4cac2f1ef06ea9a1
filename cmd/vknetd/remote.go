package main

import (
	"fmt"

	"github.com/vknetd/vknetd/control"
	"github.com/vknetd/vknetd/tap"
)

// remoteView answers the control server's questions about the VXLAN side
// from the TAP device, which reads the bridge's fdb and the VXLAN device's
// counters over netlink. Remote traffic is counted by the kernel's device
// rather than by the engine: the engine sees one TAP port, and telling
// which of its frames crossed to another host would mean a table lookup
// on the forwarding path.
type remoteView struct{ dev *tap.Device }

func (r remoteView) RemoteMACs() (map[string]control.Where, error) {
	list, err := r.dev.RemoteMACs()
	if err != nil {
		return nil, err
	}
	out := make(map[string]control.Where, len(list))
	for _, m := range list {
		w := control.Where{Via: m.Dev}
		if m.VTEP.IsValid() {
			w.VTEP = m.VTEP.String()
		}
		out[macString(m.MAC)] = w
	}
	return out, nil
}

func (r remoteView) RemoteTraffic() (control.Traffic, bool, error) {
	c, ok, err := r.dev.Remote()
	return control.Traffic{RxFrames: c.RxFrames, RxBytes: c.RxBytes, TxFrames: c.TxFrames, TxBytes: c.TxBytes}, ok, err
}

func macString(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}
