//go:build dragonfly || freebsd

package tap

// RemoteMACs is nil on the BSDs: Open refuses VXLAN there.
func (d *Device) RemoteMACs() ([]RemoteMAC, error) { return nil, nil }

// Remote reports no VXLAN device on the BSDs.
func (d *Device) Remote() (RemoteCounters, bool, error) { return RemoteCounters{}, false, nil }
