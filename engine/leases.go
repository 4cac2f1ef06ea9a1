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
// (broadcast, or unicast to that port); a DHCPNAK ends the MAC's leases.
// An ACK for a MAC no client holds leases nothing. It runs on every frame
// from the TAP, before the frame is delivered, so a client's first frame
// from its new address already finds the lease; ParseDHCPReply refuses
// other frames in a few comparisons and nothing here allocates.
func (e *Engine) snoopLease(frame []byte) {
	m, ok := secure.ParseDHCPReply(frame)
	if !ok {
		return
	}
	var to uint32
	if m.Type == secure.DHCPAck {
		id, live := e.macs.Lookup(mactable.Key(m.ClientMAC[:]), e.now)
		if !live || int(id) >= len(e.ports) || e.ports[id] == nil || e.ports[id].host {
			return
		}
		if dst := mactable.Key(frame[0:6]); !mactable.IsMulticastKey(dst) {
			if port, known := e.macs.Lookup(dst, e.now); !known || port != id {
				return
			}
		}
		to = id
	}
	if e.policy.SnoopReply(&m, to, e.now) && e.log.Enabled(context.Background(), slog.LevelDebug) {
		a := [4]byte{byte(m.Addr >> 24), byte(m.Addr >> 16), byte(m.Addr >> 8), byte(m.Addr)}
		e.log.Debug("dhcp lease", "type", m.Type, "client", mactable.FormatKey(mactable.Key(m.ClientMAC[:])),
			"ip", netip.AddrFrom4(a), "port", to, "seconds", m.LeaseSecs)
	}
}
