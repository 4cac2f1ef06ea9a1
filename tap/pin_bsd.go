//go:build dragonfly || freebsd

package tap

// PinLocal does nothing on the BSDs: if_bridge(4) has sticky entries
// (ifconfig bridge sticky) but they are not set up here.
func (d *Device) PinLocal(macs [][6]byte) error { return nil }
