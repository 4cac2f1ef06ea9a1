package engine

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/vknetd/vknetd/mactable"
	"github.com/vknetd/vknetd/secure"
)

// snoopLease reads, with --ip-source dhcp, the DHCP replies the host sends
// its clients: a DHCPACK leases its address to the client MAC (chaddr) on
// the client port that MAC is live on, provided the ACK is delivered there
// (broadcast, or unicast to that port); a DHCPNAK ends the MAC's leases. A
// DHCPv6 Reply (with --ipv6) leases its IA_NA addresses to the client MAC
// it is sent to. A reply for a MAC no client holds leases nothing. It runs
// on every frame from the TAP, before the frame is delivered, so a client's
// first frame from its new address already finds the lease; the parsers
// refuse other frames in a few comparisons and nothing here allocates.
func (e *Engine) snoopLease(frame []byte, now int64) {
	// Only the host's server, or one --dhcp-server names, may lease: the
	// TAP's side may be a LAN or other hosts.
	if len(frame) < 14 || !e.policy.LeasesFrom([6]byte(frame[6:12])) {
		return
	}
	if m, ok := secure.ParseDHCPReply(frame); ok {
		var to uint32
		if m.Type == secure.DHCPAck {
			id, live := e.clientPort(m.ClientMAC, now)
			if !live {
				return
			}
			if dst := mactable.Key(frame[0:6]); !mactable.IsMulticastKey(dst) {
				if port, known := e.macs.Lookup(dst, now); !known || port != id {
					return
				}
			}
			to = id
		}
		if e.policy.SnoopReply(&m, to, now) && e.log.Enabled(context.Background(), slog.LevelDebug) {
			a := [4]byte{byte(m.Addr >> 24), byte(m.Addr >> 16), byte(m.Addr >> 8), byte(m.Addr)}
			e.log.Debug("dhcp lease", "type", m.Type, "client", mactable.FormatKey(mactable.Key(m.ClientMAC[:])),
				"ip", netip.AddrFrom4(a), "port", to, "seconds", m.LeaseSecs)
		}
		return
	}
	if m, ok := secure.ParseDHCPv6Reply(frame); ok && m.NLeases > 0 {
		id, live := e.clientPort(m.ClientMAC, now)
		if live && e.policy.SnoopReply6(&m, id, now) && e.log.Enabled(context.Background(), slog.LevelDebug) {
			e.log.Debug("dhcpv6 lease", "client", mactable.FormatKey(mactable.Key(m.ClientMAC[:])),
				"ip", netip.AddrFrom16(m.Leases[0].Addr), "addresses", m.NLeases, "port", id, "seconds", m.Leases[0].ValidSecs)
		}
	}
}

// clientPort returns the client port mac is live on.
func (e *Engine) clientPort(mac [6]byte, now int64) (uint32, bool) {
	id, live := e.macs.Lookup(mactable.Key(mac[:]), now)
	if !live || int(id) >= len(e.ports.byID) {
		return 0, false
	}
	if p := e.ports.get(id); p == nil || p.host {
		return 0, false
	}
	return id, true
}
