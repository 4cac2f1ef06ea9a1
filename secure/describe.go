package secure

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Describe renders the addresses of the frame most recently given to
// FromClient, for the rate-limited drop log: enough for an operator to tell
// a spoofing client from a misconfigured one. It reads the raw bytes again
// with its own bounds checks, because a frame can be dropped before the
// decoders ever saw it. It allocates; call it only when logging.
func (c *Checker) Describe() string {
	f := c.frame
	if f == nil {
		return ""
	}
	var b strings.Builder
	if len(f) < 14 {
		fmt.Fprintf(&b, "runt frame of %d bytes", len(f))
		return b.String()
	}
	fmt.Fprintf(&b, "%s > %s", net.HardwareAddr(f[6:12]), net.HardwareAddr(f[0:6]))
	et, p := binary.BigEndian.Uint16(f[12:14]), f[14:]
	switch et {
	case etherTypeDot1Q, etherTypeQinQ, etherTypeQinQ9100, etherTypeQinQ9200:
		if len(p) >= 4 {
			fmt.Fprintf(&b, " vlan %d (tag 0x%04x) inner ethertype 0x%04x",
				binary.BigEndian.Uint16(p[0:2])&0x0fff, et, binary.BigEndian.Uint16(p[2:4]))
			return b.String()
		}
	case etherTypeARP:
		if len(p) >= 28 && p[4] == 6 && p[5] == 4 {
			op := "op " + fmt.Sprint(binary.BigEndian.Uint16(p[6:8]))
			switch binary.BigEndian.Uint16(p[6:8]) {
			case 1:
				op = "request"
			case 2:
				op = "reply"
			}
			fmt.Fprintf(&b, " arp %s sender %s (%s) target %s", op,
				netip.AddrFrom4([4]byte(p[14:18])), net.HardwareAddr(p[8:14]), netip.AddrFrom4([4]byte(p[24:28])))
			return b.String()
		}
	case etherTypeIPv4:
		if len(p) >= 20 {
			fmt.Fprintf(&b, " ipv4 %s > %s proto %d", netip.AddrFrom4([4]byte(p[12:16])),
				netip.AddrFrom4([4]byte(p[16:20])), p[9])
			if binary.BigEndian.Uint16(p[6:8])&0x1fff == 0 {
				describePorts(&b, p[9], p[min(int(p[0]&0x0f)*4, len(p)):])
			}
			return b.String()
		}
	case etherTypeIPv6:
		if len(p) >= 40 {
			fmt.Fprintf(&b, " ipv6 %s > %s next %d", netip.AddrFrom16([16]byte(p[8:24])),
				netip.AddrFrom16([16]byte(p[24:40])), p[6])
			return b.String()
		}
	}
	fmt.Fprintf(&b, " ethertype 0x%04x length %d", et, len(f))
	return b.String()
}

func describePorts(b *strings.Builder, proto uint8, l4 []byte) {
	if (proto == protoTCP || proto == protoUDP) && len(l4) >= 4 {
		fmt.Fprintf(b, " ports %d > %d", binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4]))
	}
}
