package tap

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// underlayMTU is the smallest MTU on the way to any peer, as far as this
// host can tell: the MTU of the device the route to each peer leaves by,
// or the route's own MTU when it sets a smaller one. The path beyond the
// first hop is the operator's to size; the error for a black-holed
// oversized packet is then the peer's missing ICMP, so the docs say to
// raise the MTU on every host and the path between them.
func underlayMTU(h *netlink.Handle, remotes []netip.Addr) (mtu int, dev string, err error) {
	for _, r := range remotes {
		routes, err := h.RouteGet(net.IP(r.AsSlice()))
		if err != nil || len(routes) == 0 {
			return 0, "", fmt.Errorf("tap: --vxlan-remote %s: no route to it here (%v); the peers must be reachable over the underlay before vknetd starts", r, err)
		}
		rt := routes[0]
		l, err := h.LinkByIndex(rt.LinkIndex)
		if err != nil {
			return 0, "", fmt.Errorf("tap: --vxlan-remote %s: look up the device its route leaves by (index %d): %w", r, rt.LinkIndex, err)
		}
		m, name := l.Attrs().MTU, l.Attrs().Name
		if rt.MTU > 0 && rt.MTU < m {
			m, name = rt.MTU, fmt.Sprintf("%s (route to %s, mtu %d)", name, r, rt.MTU)
		}
		if mtu == 0 || m < mtu {
			mtu, dev = m, name
		}
	}
	return mtu, dev, nil
}
