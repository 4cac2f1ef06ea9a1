package framefmt

import (
	"encoding/binary"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// maxTags bounds how many VLAN tags a line lists: a hostile frame can stack hundreds,
// and the line must stay readable.
const maxTags = 4

// Decoder formats frames into lines, reusing its decoding state between calls. It is
// not safe for concurrent use; give each goroutine its own.
type Decoder struct {
	parser  *gopacket.DecodingLayerParser
	layers  gopacket.DecodingLayerContainer
	decoded []gopacket.LayerType

	eth   layers.Ethernet
	dot1q layers.Dot1Q
	arp   layers.ARP
	ip4   ipv4
	ip6   ipv6
	tcp   layers.TCP
	udp   layers.UDP
	icmp4 layers.ICMPv4
	icmp6 layers.ICMPv6
	echo6 layers.ICMPv6Echo
}

// ipv4 and ipv6 stop the parser at a tunnelled IP header: the parser has one struct per
// layer type, so decoding the inner header would overwrite the outer addresses.
type ipv4 struct{ layers.IPv4 }

func (l *ipv4) NextLayerType() gopacket.LayerType { return notIP(l.IPv4.NextLayerType()) }

type ipv6 struct{ layers.IPv6 }

func (l *ipv6) NextLayerType() gopacket.LayerType { return notIP(l.IPv6.NextLayerType()) }

func notIP(t gopacket.LayerType) gopacket.LayerType {
	if t == layers.LayerTypeIPv4 || t == layers.LayerTypeIPv6 {
		return gopacket.LayerTypeZero
	}
	return t
}

// NewDecoder returns a Decoder with all its layers allocated.
func NewDecoder() *Decoder {
	d := &Decoder{decoded: make([]gopacket.LayerType, 0, 16)}
	// A sparse container indexes decoders by layer type instead of hashing it.
	var c gopacket.DecodingLayerContainer = gopacket.DecodingLayerSparse(nil)
	for _, l := range []gopacket.DecodingLayer{
		&d.eth, &d.dot1q, &d.arp, &d.ip4, &d.ip6, &d.tcp, &d.udp, &d.icmp4, &d.icmp6, &d.echo6,
	} {
		c = c.Put(l)
	}
	d.layers = c
	d.parser = gopacket.NewDecodingLayerParser(layers.LayerTypeEthernet)
	d.parser.SetDecodingLayerContainer(c)
	// Stopping at a layer we do not decode is normal (DNS, LLDP, ...), not an error; and
	// an UnsupportedLayerType error would allocate.
	d.parser.IgnoreUnsupported = true
	return d
}

// Line appends one line (no trailing newline) describing frame to dst and returns the
// extended slice; see the package documentation for the format.
//
// It does not allocate when dst has room for the line, except for frames whose headers
// make gopacket allocate: IPv6 hop-by-hop options (MLD reports), more than four TCP
// options of the kinds gopacket keeps, multipath TCP options, and decoding errors
// (gopacket builds their messages with fmt).
func (d *Decoder) Line(dst []byte, ts time.Time, frame []byte) []byte {
	err := d.parser.DecodeLayers(frame, &d.decoded)
	dst = appendTime(dst, ts)
	if len(d.decoded) == 0 {
		dst = append(dst, " len "...)
		dst = strconv.AppendInt(dst, int64(len(frame)), 10)
		return append(dst, ": truncated Ethernet header"...)
	}

	var tags int
	var arp, ip4, ip6, tcp, udp, icmp4, icmp6, echo6 bool
	for _, t := range d.decoded {
		switch t {
		case layers.LayerTypeDot1Q:
			tags++
		case layers.LayerTypeARP:
			arp = true
		case layers.LayerTypeIPv4:
			ip4 = true
		case layers.LayerTypeIPv6:
			ip6 = true
		case layers.LayerTypeTCP:
			tcp = true
		case layers.LayerTypeUDP:
			udp = true
		case layers.LayerTypeICMPv4:
			icmp4 = true
		case layers.LayerTypeICMPv6:
			icmp6 = true
		case layers.LayerTypeICMPv6Echo:
			echo6 = true
		}
	}

	dst = append(dst, ' ')
	dst = appendHex(dst, d.eth.SrcMAC)
	dst = append(dst, " > "...)
	dst = appendHex(dst, d.eth.DstMAC)
	etype := d.eth.EthernetType
	if tags > 0 {
		// The Dot1Q layer keeps only the innermost tag: read each one from the frame.
		for i := 0; i < tags && i < maxTags; i++ {
			dst = append(dst, " vlan "...)
			tci := binary.BigEndian.Uint16(d.eth.Payload[4*i:])
			dst = strconv.AppendUint(dst, uint64(tci&0x0fff), 10)
		}
		if tags > maxTags {
			dst = append(dst, " (+"...)
			dst = strconv.AppendInt(dst, int64(tags-maxTags), 10)
			dst = append(dst, " tags)"...)
		}
		etype = d.dot1q.Type
	}
	dst = append(dst, ' ')
	dst = appendEtherType(dst, etype)
	dst = append(dst, " len "...)
	dst = strconv.AppendInt(dst, int64(len(frame)), 10)

	// Everything after the length is written with a leading space; the colon that
	// introduces it is slipped in at the end, only when something was written.
	body := len(dst)
	var sport, dport uint16
	var ports bool
	switch {
	case tcp:
		sport, dport, ports = uint16(d.tcp.SrcPort), uint16(d.tcp.DstPort), true
	case udp:
		sport, dport, ports = uint16(d.udp.SrcPort), uint16(d.udp.DstPort), true
	}
	switch {
	case arp:
		dst = d.appendARP(dst)
	case ip4:
		ip := &d.ip4.IPv4
		dst = appendEndpoints(dst, netip.AddrFrom4([4]byte(ip.SrcIP)), netip.AddrFrom4([4]byte(ip.DstIP)), sport, dport, ports)
		dst = d.appendTransport(dst, ip.Protocol, tcp, udp, icmp4, false, false)
		if ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0 {
			dst = append(dst, " frag id "...)
			dst = strconv.AppendUint(dst, uint64(ip.Id), 10)
			dst = append(dst, " off "...)
			dst = strconv.AppendUint(dst, uint64(ip.FragOffset)*8, 10)
			if ip.Flags&layers.IPv4MoreFragments != 0 {
				dst = append(dst, " MF"...)
			}
		}
	case ip6:
		ip := &d.ip6.IPv6
		next := ip.NextHeader
		if ip.HopByHop != nil {
			next = ip.HopByHop.NextHeader
		}
		dst = appendEndpoints(dst, netip.AddrFrom16([16]byte(ip.SrcIP)), netip.AddrFrom16([16]byte(ip.DstIP)), sport, dport, ports)
		dst = d.appendTransport(dst, next, tcp, udp, icmp6, echo6, true)
	}

	switch {
	case err != nil && !d.parser.Truncated:
		dst = append(dst, " malformed"...)
	case err != nil || d.parser.Truncated || d.stoppedShort():
		dst = append(dst, " truncated"...)
	}
	if len(dst) > body {
		dst = append(dst, 0)
		copy(dst[body+1:], dst[body:])
		dst[body] = ':'
	}
	return dst
}

// stoppedShort reports whether the parser stopped because a layer had no payload left
// while its header announced one we decode (an IPv4 ethertype on a bare 14-byte frame,
// an IP header whose total length leaves no room for the TCP header, ...).
func (d *Decoder) stoppedShort() bool {
	last, ok := d.layers.Decoder(d.decoded[len(d.decoded)-1])
	if !ok {
		return false
	}
	_, ours := d.layers.Decoder(last.NextLayerType())
	return ours
}

func (d *Decoder) appendTransport(dst []byte, proto layers.IPProtocol, tcp, udp, icmp, echo6, v6 bool) []byte {
	switch {
	case tcp:
		dst = append(dst, " TCP "...)
		return appendTCPFlags(dst, &d.tcp)
	case udp:
		return append(dst, " UDP"...)
	case icmp && !v6:
		dst = append(dst, " ICMP "...)
		t, c := d.icmp4.TypeCode.Type(), d.icmp4.TypeCode.Code()
		dst = appendICMPType(dst, t, c, icmp4Names[:])
		if t == layers.ICMPv4TypeEchoRequest || t == layers.ICMPv4TypeEchoReply {
			dst = appendIDSeq(dst, d.icmp4.Id, d.icmp4.Seq)
		}
		return dst
	case icmp && v6:
		dst = append(dst, " ICMPv6 "...)
		dst = appendICMPType(dst, d.icmp6.TypeCode.Type(), d.icmp6.TypeCode.Code(), icmp6Names[:])
		if echo6 {
			dst = appendIDSeq(dst, d.echo6.Identifier, d.echo6.SeqNumber)
		}
		return dst
	}
	dst = append(dst, ' ')
	return appendIPProto(dst, proto)
}

func (d *Decoder) appendARP(dst []byte) []byte {
	a := &d.arp
	switch a.Operation {
	case layers.ARPRequest:
		dst = append(dst, " request who-has "...)
		dst = appendAddr(dst, a.DstProtAddress)
		dst = append(dst, " tell "...)
		dst = appendAddr(dst, a.SourceProtAddress)
		dst = append(dst, " ("...)
		dst = appendAddr(dst, a.SourceHwAddress)
		return append(dst, ')')
	case layers.ARPReply:
		dst = append(dst, " reply "...)
		dst = appendAddr(dst, a.SourceProtAddress)
		dst = append(dst, " is-at "...)
		dst = appendAddr(dst, a.SourceHwAddress)
		dst = append(dst, " to "...)
		return appendAddr(dst, a.DstProtAddress)
	}
	dst = append(dst, " op "...)
	dst = strconv.AppendUint(dst, uint64(a.Operation), 10)
	dst = append(dst, " sender "...)
	dst = appendAddr(dst, a.SourceProtAddress)
	dst = append(dst, " ("...)
	dst = appendAddr(dst, a.SourceHwAddress)
	dst = append(dst, ") target "...)
	return appendAddr(dst, a.DstProtAddress)
}

// appendAddr writes an ARP address by its length: ARP can carry any hardware and
// protocol address sizes, and a frame may lie about them.
func appendAddr(dst, b []byte) []byte {
	switch len(b) {
	case 0:
		return append(dst, '-')
	case 4:
		return netip.AddrFrom4([4]byte(b)).AppendTo(dst)
	case 16:
		return netip.AddrFrom16([16]byte(b)).AppendTo(dst)
	}
	return appendHex(dst, b)
}

func appendEndpoints(dst []byte, src, dstIP netip.Addr, sport, dport uint16, ports bool) []byte {
	dst = append(dst, ' ')
	dst = appendEndpoint(dst, src, sport, ports)
	dst = append(dst, " > "...)
	return appendEndpoint(dst, dstIP, dport, ports)
}

func appendEndpoint(dst []byte, a netip.Addr, port uint16, withPort bool) []byte {
	if !withPort {
		return a.AppendTo(dst)
	}
	if a.Is6() {
		dst = append(dst, '[')
		dst = a.AppendTo(dst)
		dst = append(dst, ']')
	} else {
		dst = a.AppendTo(dst)
	}
	dst = append(dst, ':')
	return strconv.AppendUint(dst, uint64(port), 10)
}

func appendTCPFlags(dst []byte, t *layers.TCP) []byte {
	dst = append(dst, '[')
	n := len(dst)
	// tcpdump's letters and order, which people already read fluently.
	for _, f := range [...]struct {
		on bool
		c  byte
	}{{t.FIN, 'F'}, {t.SYN, 'S'}, {t.RST, 'R'}, {t.PSH, 'P'}, {t.ACK, '.'}, {t.URG, 'U'}, {t.ECE, 'E'}, {t.CWR, 'W'}} {
		if f.on {
			dst = append(dst, f.c)
		}
	}
	if len(dst) == n {
		dst = append(dst, "none"...)
	}
	return append(dst, ']')
}

func appendIDSeq(dst []byte, id, seq uint16) []byte {
	dst = append(dst, " id "...)
	dst = strconv.AppendUint(dst, uint64(id), 10)
	dst = append(dst, " seq "...)
	return strconv.AppendUint(dst, uint64(seq), 10)
}

// appendICMPType writes the type's name when it has one and the code when it is not 0;
// an unnamed type is written as numbers.
func appendICMPType(dst []byte, typ, code uint8, names []string) []byte {
	if name := names[typ]; name != "" {
		dst = append(dst, name...)
		if code == 0 {
			return dst
		}
	} else {
		dst = append(dst, "type "...)
		dst = strconv.AppendUint(dst, uint64(typ), 10)
	}
	dst = append(dst, " code "...)
	return strconv.AppendUint(dst, uint64(code), 10)
}

var icmp4Names = [256]string{
	0: "echo-reply", 3: "dest-unreachable", 4: "source-quench", 5: "redirect",
	8: "echo-request", 9: "router-advertisement", 10: "router-solicitation",
	11: "time-exceeded", 12: "parameter-problem", 13: "timestamp", 14: "timestamp-reply",
}

var icmp6Names = [256]string{
	1: "dest-unreachable", 2: "packet-too-big", 3: "time-exceeded", 4: "parameter-problem",
	128: "echo-request", 129: "echo-reply", 130: "mld-query", 131: "mld-report", 132: "mld-done",
	133: "router-solicitation", 134: "router-advertisement", 135: "neighbor-solicitation",
	136: "neighbor-advertisement", 137: "redirect", 143: "mldv2-report",
}

func appendIPProto(dst []byte, p layers.IPProtocol) []byte {
	switch p {
	case layers.IPProtocolICMPv4:
		return append(dst, "ICMP"...)
	}
	if name := p.String(); !strings.HasPrefix(name, "Unknown") {
		return append(dst, name...)
	}
	dst = append(dst, "proto "...)
	return strconv.AppendUint(dst, uint64(p), 10)
}

func appendEtherType(dst []byte, t layers.EthernetType) []byte {
	if t < 0x0600 {
		// An 802.3 length field rather than a type: gopacket calls what follows LLC.
		return append(dst, "LLC"...)
	}
	if name := t.String(); !strings.HasPrefix(name, "Unknown") {
		return append(dst, name...)
	}
	dst = append(dst, "ethertype 0x"...)
	return appendHex16(dst, uint16(t))
}

// appendTime writes ts in TimeLayout. time.AppendFormat re-parses the layout on every
// call and took half the time of a whole line; this is the same output without that.
func appendTime(dst []byte, ts time.Time) []byte {
	year, month, day := ts.Date()
	_, offset := ts.Zone()
	if year < 0 || year > 9999 || offset%60 != 0 {
		return ts.AppendFormat(dst, TimeLayout)
	}
	hour, minute, second := ts.Clock()
	dst = appendDigits(dst, year, 4)
	dst = append(dst, '-')
	dst = appendDigits(dst, int(month), 2)
	dst = append(dst, '-')
	dst = appendDigits(dst, day, 2)
	dst = append(dst, 'T')
	dst = appendDigits(dst, hour, 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, minute, 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, second, 2)
	dst = append(dst, '.')
	dst = appendDigits(dst, ts.Nanosecond()/1000, 6)
	if offset == 0 {
		return append(dst, 'Z')
	}
	sign := byte('+')
	if offset < 0 {
		sign, offset = '-', -offset
	}
	dst = append(dst, sign)
	dst = appendDigits(dst, offset/3600, 2)
	dst = append(dst, ':')
	return appendDigits(dst, offset/60%60, 2)
}

// appendDigits writes v, which is not negative, zero-padded to width digits.
func appendDigits(dst []byte, v, width int) []byte {
	var buf [8]byte
	i := len(buf)
	for ; width > 0 || v > 0; width-- {
		i--
		buf[i] = byte('0' + v%10)
		v /= 10
	}
	return append(dst, buf[i:]...)
}

const hexDigits = "0123456789abcdef"

func appendHex16(dst []byte, v uint16) []byte {
	return append(dst, hexDigits[v>>12], hexDigits[v>>8&0xf], hexDigits[v>>4&0xf], hexDigits[v&0xf])
}

// appendHex writes b as colon-separated hex bytes, the usual form of a MAC address.
func appendHex(dst, b []byte) []byte {
	for i, c := range b {
		if i > 0 {
			dst = append(dst, ':')
		}
		dst = append(dst, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return dst
}
