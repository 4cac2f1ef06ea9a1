package secure

// A VM that migrates keeps its MAC and its addresses but reaches the switch
// through a new port: the destination QEMU's connection. The engine decides
// when the VM has moved (engine/migrate.go: same user, and the old port
// stopped, gone or silent); these follow its decision for the addresses.

// MoveMAC moves every binding and lease of mac on port from to port to,
// keeping each one's source, user and expiry, and returns how many moved.
// The caller moves the VM between two ports of one user, so the user's
// --user-ips count is unchanged; the ports' --port-ips counts follow the
// bindings, and may leave to above its limit for a while: the VM's
// addresses are not refused for having moved, only new ones are.
func (p *Policy) MoveMAC(mac [6]byte, from, to uint32) int {
	if !p.secure || from == to {
		return 0
	}
	p.lock()
	defer p.unlock()
	n := p.table.moveMAC(mac, from, to)
	if p.leases != nil {
		n += p.leases.moveMAC(mac, from, to)
	}
	if n > 0 {
		p.revoked()
	}
	return n
}

// ReleaseMAC removes every binding and lease of mac on port, and returns
// how many: the VM behind it went to another host, and the host's side
// (the TAP: a VXLAN peer) holds no bindings.
func (p *Policy) ReleaseMAC(mac [6]byte, port uint32) int {
	if !p.secure {
		return 0
	}
	p.lock()
	defer p.unlock()
	drop := func(b *binding) bool { return b.mac == mac && b.port == port }
	n := p.table.removeIf(drop)
	if p.leases != nil {
		n += p.leases.removeIf(drop)
	}
	if n > 0 {
		p.revoked()
	}
	return n
}

// moveMAC rewrites the port of mac's bindings on from. Keys do not change,
// so no entry moves in the table.
func (t *bindTable) moveMAC(mac [6]byte, from, to uint32) int {
	n := 0
	for i := range t.slots {
		s := &t.slots[i]
		if !s.used || s.mac != mac || s.port != from {
			continue
		}
		s.port = to
		if t.portMax > 0 {
			t.perPort[from]--
			t.perPort[to]++
		}
		n++
	}
	return n
}
