package secure

import (
	"bytes"
	"encoding/binary"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

const (
	etherTypeIPv4  = 0x0800
	etherTypeARP   = 0x0806
	etherTypeRARP  = 0x8035
	etherTypeIPv6  = 0x86dd
	etherTypeDot1Q = 0x8100
	etherTypeQinQ  = 0x88a8
	// Pre-standard QinQ outer tags some switches still emit.
	etherTypeQinQ9100 = 0x9100
	etherTypeQinQ9200 = 0x9200

	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

type frameKind uint8

const (
	kindOther frameKind = iota
	kindARP
	kindIPv4
	kindIPv6
	// kindAnnounce: a RARP request announcing the sender's own MAC, as
	// QEMU sends for a migrated VM.
	kindAnnounce
)

// ipv4Layer is gopacket's IPv4 decoder with a narrower NextLayerType: the
// parser descends only into UDP, the one transport whose fields a rule reads
// (the DHCP exception). Left to itself gopacket would follow protocol 4
// (IP-in-IP) into a second IPv4 header, decoded into this same layer,
// overwriting the outer header the rules must judge.
type ipv4Layer struct {
	layers.IPv4
}

func (l *ipv4Layer) NextLayerType() gopacket.LayerType {
	if l.Flags&layers.IPv4MoreFragments != 0 || l.FragOffset != 0 {
		return gopacket.LayerTypeFragment
	}
	if l.Protocol == layers.IPProtocolUDP {
		return layers.LayerTypeUDP
	}
	return gopacket.LayerTypePayload
}

// Checker judges frames against a Policy. Each engine worker owns one; its
// decoder state is reused for every frame, so a Checker is not safe for
// concurrent use and the Policy it shares is owned by the engine loop.
//
// Decoding is split between gopacket and hand parsing. Ethernet, ARP, IPv4
// and UDP go through a DecodingLayerParser, but only after the header
// lengths and the IPv4 header's validity are checked by hand: gopacket does
// not check the IPv4 version, treats a total length of 0 as a TSO frame, and
// its error paths allocate (fmt.Errorf), which an attacker sending malformed
// frames must not be able to trigger. TCP is never handed to gopacket: the
// rules need only its presence, and gopacket's TCP decoder allocates for
// every MPTCP option. IPv6 is parsed by hand because gopacket's IPv6 decoder
// allocates a struct per hop-by-hop option (every MLD report carries one),
// and neighbour-discovery bodies because gopacket's ND decoders append each
// option to a growing slice; the ICMPv6 header itself uses gopacket's layer.
type Checker struct {
	p       *Policy
	parser  *gopacket.DecodingLayerParser
	eth     layers.Ethernet
	arp     layers.ARP
	ip4     ipv4Layer
	udp     layers.UDP
	icmp6   layers.ICMPv6
	decoded []gopacket.LayerType

	// What FromClient learned of the most recent frame, for ToTap and
	// Describe. frame aliases the caller's buffer.
	frame   []byte
	port    uint32
	verdict Reason
	kind    frameKind
	proto   uint8 // IPv4 protocol, or the IPv6 header after the extension headers

	// Addresses the frame claims (source, ARP sender, NA target), bound
	// only once every rule has passed, so a dropped frame binds nothing.
	// The empty array keeps claims on an 8-byte boundary: after the bytes
	// above it sat at an odd offset, and its 16-byte stores could straddle
	// a cache line on every frame.
	_       [0]uint64
	claims  [2]bindKey
	nclaims int
	// With --ip-source dhcp, the addresses a DHCPRELEASE (v4 or v6) gives
	// back once it passes.
	released  [maxReleased]bindKey
	nreleased int

	// slotHints holds, for each port (modulo slotHints), the binding
	// slot where its last claim was found or bound (slotOf).
	slotHints [slotHints]uint32

	// passed are the claims this Checker passed on a shared policy
	// (shared.go).
	passed [passedLen]passedClaim
}

// NewChecker returns a Checker for one engine worker.
func (p *Policy) NewChecker() *Checker {
	c := &Checker{p: p, decoded: make([]gopacket.LayerType, 0, 4)}
	// At most 40 one-byte options fit in an IPv4 header: with that capacity
	// gopacket's append never grows the slice.
	c.ip4.Options = make([]layers.IPv4Option, 0, 40)
	var dlc gopacket.DecodingLayerContainer = gopacket.DecodingLayerSparse(nil)
	for _, l := range []gopacket.DecodingLayer{&c.eth, &c.arp, &c.ip4, &c.udp} {
		dlc = dlc.Put(l)
	}
	c.parser = gopacket.NewDecodingLayerParser(layers.LayerTypeEthernet)
	c.parser.SetDecodingLayerContainer(dlc)
	// The layers the parser does not know (TCP, ICMP, DHCP, ARP padding)
	// end decoding without an error; which layers were decoded is checked.
	c.parser.IgnoreUnsupported = true
	return c
}

// FromClient applies the rules every frame a client sends must obey,
// whatever its destination. port is the client's port; now is monotonic
// nanoseconds, used to age the bindings the frame refreshes. On Pass the
// frame's addresses are bound to its source MAC and port. frame must stay
// unchanged until ToTap and Describe are done with it.
func (c *Checker) FromClient(frame []byte, port uint32, now int64) Reason {
	if r := c.Check(frame, port); r != Pass {
		return r
	}
	return c.Bind(now)
}

// Check is FromClient's first half: the rules, without touching the
// bindings. A caller with rules of its own (the engine's MAC ownership)
// applies them between Check and Bind, so that a frame it refuses binds
// nothing.
func (c *Checker) Check(frame []byte, port uint32) Reason {
	if !c.p.secure {
		return Pass
	}
	c.verdict = c.check(frame, port) // small enough to inline, one call less a frame
	return c.verdict
}

// Bind is FromClient's second half: it binds (or refreshes) the addresses
// of the frame Check just passed, or reports the binding rule it breaks.
func (c *Checker) Bind(now int64) Reason {
	// The path of nearly every frame, with refreshHinted inlined here:
	// one claim, already bound to this client where the port's slot hint
	// points. (Bind itself is too large to be inlined into its caller.)
	if c.verdict == Pass && c.nclaims == 1 && !c.p.shared && c.p.leases == nil && c.refreshHinted(now) {
		return Pass
	}
	return c.bindFrame(now)
}

// bindFrame is Bind for every other frame.
func (c *Checker) bindFrame(now int64) Reason {
	if !c.p.secure || c.verdict != Pass || c.nclaims == 0 && c.nreleased == 0 {
		return c.verdict
	}
	if c.p.shared {
		return c.bindShared(now)
	}
	if c.p.leases != nil {
		c.verdict = c.bindLeased([6]byte(c.frame[6:12]), now)
	} else {
		c.verdict = c.bind([6]byte(c.frame[6:12]), now)
	}
	return c.verdict
}

// ToTap applies the extra rules for delivering to the TAP the frame most
// recently passed to FromClient, from what FromClient decoded.
func (c *Checker) ToTap() Reason {
	if !c.p.secure {
		return Pass
	}
	if c.verdict != Pass {
		return c.verdict
	}
	switch c.kind {
	case kindARP, kindAnnounce:
		// An announcement goes out so that other hosts (--vxlan) and a
		// bridged LAN learn where a migrated VM is now.
		return Pass
	case kindIPv4:
		switch c.proto {
		case protoICMP, protoTCP, protoUDP:
			return Pass
		}
		return TapProtoDenied
	case kindIPv6:
		switch c.proto {
		case protoICMPv6, protoTCP, protoUDP:
			return Pass
		}
		return TapProtoDenied
	}
	return TapEtherDenied
}

func (c *Checker) check(frame []byte, port uint32) Reason {
	c.frame, c.port = frame, port
	c.kind, c.proto, c.nclaims, c.nreleased = kindOther, 0, 0, 0
	if len(frame) < 14 {
		return Truncated
	}
	// The source as one word, read from the frame: as a [6]byte it was
	// copied to the stack and read back a byte at a time.
	src := macWord(frame[6:12])
	switch {
	case src&1 != 0:
		return SrcMACMulticast
	case src == 0:
		return SrcMACZero
	case src == c.p.tapMACWord:
		return SrcMACTap
	}
	switch binary.BigEndian.Uint16(frame[12:14]) {
	case etherTypeARP:
		c.kind = kindARP
		return c.checkARP(frame)
	case etherTypeIPv4:
		c.kind = kindIPv4
		return c.checkIPv4(frame)
	case etherTypeIPv6:
		c.kind = kindIPv6
		if !c.p.ipv6 {
			return IPv6Disabled
		}
		return c.checkIPv6(frame)
	case etherTypeDot1Q, etherTypeQinQ, etherTypeQinQ9100, etherTypeQinQ9200:
		return VLANTagged
	case etherTypeRARP:
		if announcement(frame) {
			c.kind = kindAnnounce
		}
	}
	// Other ethertypes carry no address the policy governs; receivers must
	// opt in to them, and ToTap keeps them off the TAP.
	return Pass
}

// macWord is the MAC address m (6 bytes) as a little-endian word: its
// first byte, which holds the group bit, in the low bits.
func macWord(m []byte) uint64 {
	return uint64(binary.LittleEndian.Uint32(m[:4])) | uint64(binary.LittleEndian.Uint16(m[4:6]))<<32
}

// announcement reports whether frame is a RARP request (opcode 3) for
// Ethernet and IPv4 whose sender and target hardware addresses are the
// frame's source: QEMU's announcement of a migrated VM. It claims no
// address; any other RARP stays off the TAP.
func announcement(frame []byte) bool {
	a := frame[14:]
	return len(a) >= 28 && binary.BigEndian.Uint16(a[0:2]) == uint16(layers.LinkTypeEthernet) &&
		binary.BigEndian.Uint16(a[2:4]) == etherTypeIPv4 && a[4] == 6 && a[5] == 4 &&
		binary.BigEndian.Uint16(a[6:8]) == 3 &&
		string(a[8:14]) == string(frame[6:12]) && string(a[18:24]) == string(frame[6:12])
}

func (c *Checker) checkARP(frame []byte) Reason {
	a := frame[14:]
	if len(a) < 8 {
		return Truncated
	}
	// gopacket's ARP takes the address sizes from the packet; anything but
	// Ethernet/IPv4 ARP has no place on this segment.
	if binary.BigEndian.Uint16(a[0:2]) != uint16(layers.LinkTypeEthernet) ||
		binary.BigEndian.Uint16(a[2:4]) != etherTypeIPv4 || a[4] != 6 || a[5] != 4 {
		return ARPMalformed
	}
	op := binary.BigEndian.Uint16(a[6:8])
	if op != layers.ARPRequest && op != layers.ARPReply {
		return ARPMalformed
	}
	if len(a) < 28 {
		return Truncated
	}
	if err := c.parser.DecodeLayers(frame, &c.decoded); err != nil || !c.has(layers.LayerTypeARP) {
		return ARPMalformed // unreachable after the checks above; never pass on doubt
	}
	if !bytes.Equal(c.arp.SourceHwAddress, c.eth.SrcMAC) {
		return ARPSenderMismatch
	}
	sender := binary.BigEndian.Uint32(c.arp.SourceProtAddress)
	if sender == 0 {
		// An ARP probe (RFC 5227): asks about an address without claiming it.
		if c.arp.Operation == layers.ARPRequest {
			return Pass
		}
		return ARPSenderOutside
	}
	if r := c.claimable4(sender, ARPSenderOutside); r != Pass {
		return r
	}
	c.setClaim4(sender)
	return Pass
}

func (c *Checker) checkIPv4(frame []byte) Reason {
	h := frame[14:]
	if len(h) < 20 {
		return Truncated
	}
	if h[0]>>4 != 4 {
		return IPv4Malformed
	}
	hlen := int(h[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(h[2:4]))
	switch {
	case hlen < 20 || total < hlen:
		return IPv4Malformed
	case total > len(h):
		return Truncated
	case !validIPv4Options(h[20:hlen]):
		return IPv4Malformed
	case !ipv4ChecksumOK(h[:hlen]):
		return IPv4BadChecksum
	}
	frag := binary.BigEndian.Uint16(h[6:8])
	first := frag&0x1fff == 0
	whole := first && frag&0x2000 == 0
	proto := h[9]
	c.proto = proto
	if first {
		if r := checkTransport(proto, h[hlen:total], whole); r != Pass {
			return r
		}
	}
	// The header is whole and valid, and so is a whole datagram's UDP
	// header (checkTransport): the fields are read where they are, without
	// a general decoder, on the path every client frame takes.
	src := binary.BigEndian.Uint32(h[12:16])
	dhcp := false
	if whole && proto == protoUDP {
		l4 := h[hlen:total]
		if binary.BigEndian.Uint16(l4[0:2]) == 68 && binary.BigEndian.Uint16(l4[2:4]) == 67 {
			dhcp = true
			// Whatever its source, a DHCP client speaks only for itself: a
			// release or request in another client's name would free or
			// take that client's lease.
			r, released := checkDHCPClient(l4[8:binary.BigEndian.Uint16(l4[4:6])], frame[6:12])
			if r != Pass {
				return r
			}
			if c.p.leases != nil && released != 0 {
				c.released[0], c.nreleased = key4(released), 1
			}
		}
	}
	if src == 0 {
		// A DHCP client has no address yet; nothing else may send from 0.0.0.0.
		if !dhcp {
			return IPv4ZeroSrcNotDHCP
		}
	} else if r := c.claimable4(src, IPv4SrcOutside); r != Pass {
		return r
	} else {
		c.setClaim4(src)
	}
	// Last, so that it only refuses what every other rule passed.
	if first {
		return hostOnly4(proto, h[hlen:total])
	}
	return Pass
}

// checkDHCPClient checks a BOOTP request against the frame's source MAC:
// the client hardware address, and an Ethernet-type client identifier
// (option 61), which servers such as dnsmasq prefer to chaddr. Identifiers
// of other types (DUIDs) cannot be tied to a MAC and are left alone. In
// the same walk of the options it reads, for --ip-source dhcp, the address
// a DHCPRELEASE gives back (ciaddr; 0 for any other message).
func checkDHCPClient(b []byte, src []byte) (r Reason, released uint32) {
	if len(b) < bootpOptions || b[0] != 1 || b[1] != 1 || b[2] != 6 ||
		binary.BigEndian.Uint32(b[bootpCookie:]) != dhcpCookie {
		return DHCPMalformed, 0
	}
	if string(b[bootpChaddr:bootpChaddr+6]) != string(src) {
		return DHCPClientMismatch, 0
	}
	typed := false // the first message type option was seen
	for o := b[bootpOptions:]; len(o) > 0; {
		code, v, rest, good := dhcpOption(o)
		switch {
		case !good:
			return DHCPMalformed, 0
		case code == dhcpOptEnd:
			return Pass, released
		case code == dhcpOptClientID && len(v) == 7 && v[0] == 1 && string(v[1:]) != string(src):
			return DHCPClientMismatch, 0
		case code == dhcpOptMessageType && len(v) == 1 && !typed:
			typed = true
			if v[0] == dhcpRelease {
				released = binary.BigEndian.Uint32(b[bootpCiaddr:])
			}
		}
		o = rest
	}
	return Pass, released
}

// validIPv4Options accepts what gopacket's IPv4 decoder accepts, so that
// decoder never reaches its (allocating) error returns.
func validIPv4Options(o []byte) bool {
	for len(o) > 0 {
		switch o[0] {
		case 0: // end of options: the rest is padding
			return true
		case 1: // no-op
			o = o[1:]
		default:
			if len(o) < 2 || o[1] < 2 || int(o[1]) > len(o) {
				return false
			}
			o = o[o[1]:]
		}
	}
	return true
}

// ipv4ChecksumOK verifies the header checksum (RFC 1071): the one's
// complement sum of a correct header, checksum included, is 0xffff.
// Summing 32-bit words and folding later gives the same one's complement
// sum in half the steps; len(h) is a multiple of 4.
//
// A header without options, nearly every one, is summed without the
// loop: five independent loads and adds, where the loop's were one chain,
// and three folds, which bring a sum of five words (below 2^35) to 16
// bits.
func ipv4ChecksumOK(h []byte) bool {
	if len(h) != 20 {
		return ipv4ChecksumWithOptionsOK(h)
	}
	sum := uint64(binary.BigEndian.Uint32(h[0:4])) + uint64(binary.BigEndian.Uint32(h[4:8])) +
		uint64(binary.BigEndian.Uint32(h[8:12])) + uint64(binary.BigEndian.Uint32(h[12:16])) +
		uint64(binary.BigEndian.Uint32(h[16:20]))
	sum = sum&0xffff + sum>>16
	sum = sum&0xffff + sum>>16
	sum = sum&0xffff + sum>>16
	return sum == 0xffff
}

// ipv4ChecksumWithOptionsOK is ipv4ChecksumOK for a header of any length.
func ipv4ChecksumWithOptionsOK(h []byte) bool {
	var sum uint64
	for ; len(h) >= 4; h = h[4:] {
		sum += uint64(binary.BigEndian.Uint32(h))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}

// checkTransport requires the transport header of an unfragmented datagram
// or a first fragment to be all there. whole: the datagram is unfragmented,
// so a UDP length can be checked against it. Written to be inlined: the
// minimum lengths come from a table.
func checkTransport(proto uint8, l4 []byte, whole bool) Reason {
	if len(l4) < int(transportHeaderLen[proto]) {
		return Truncated
	}
	switch proto {
	case protoTCP:
		off := int(l4[12]>>4) * 4
		if off < 20 {
			return TransportMalformed
		}
		if off > len(l4) {
			return Truncated
		}
	case protoUDP:
		// 0 would mean an IPv6 jumbogram, impossible on Ethernet.
		if n := int(binary.BigEndian.Uint16(l4[4:6])); whole && (n < 8 || n > len(l4)) {
			if n < 8 {
				return TransportMalformed
			}
			return Truncated
		}
	}
	return Pass
}

// transportHeaderLen is the fixed header's length of each transport the
// rules read (TCP's without options), 0 for the others.
var transportHeaderLen = [256]uint8{protoTCP: 20, protoUDP: 8, protoICMP: 8, protoICMPv6: 4}

func (c *Checker) has(t gopacket.LayerType) bool {
	for _, d := range c.decoded {
		if d == t {
			return true
		}
	}
	return false
}

// claimable4 checks the IPv4 address an IPv4 or ARP frame claims: not the
// TAP's, and inside the network (else outside). Then setClaim4 queues it
// for binding. Both are small enough to be inlined.
func (c *Checker) claimable4(a uint32, outside Reason) Reason {
	if a == c.p.tap4 {
		return TapAddrClaimed
	}
	if !c.p.host4(a) {
		return outside
	}
	return Pass
}

// setClaim4 makes a the frame's one claim: an IPv4 packet claims its
// source, an ARP packet its sender, nothing else, so it is not compared
// with others. The key is stored as the two 8-byte words bind's hash
// loads. Built byte by byte on the stack and copied whole, it was read
// back with one 16-byte load from the smaller stores just made, which the
// CPU cannot forward: a stall on every frame (13 % of
// BenchmarkVerdictTCP).
func (c *Checker) setClaim4(a uint32) {
	putKey4(&c.claims[0], a)
	c.nclaims = 1
}

func (c *Checker) addClaim(k bindKey) {
	for i := 0; i < c.nclaims; i++ {
		if c.claims[i] == k {
			return
		}
	}
	c.claims[c.nclaims] = k
	c.nclaims++
}

// bind checks the frame's claims against the binding table and, only if
// all of them are free or already this client's, binds or refreshes them.
// A refresh, what nearly every frame is, costs one lookup per claim: the
// user's ranges and quota matter only to an address not yet bound.
func (c *Checker) bind(mac [6]byte, now int64) Reason {
	t := &c.p.table
	var slot [2]int
	need := 0
	for i := 0; i < c.nclaims; i++ {
		j := c.slotOf(&c.claims[i])
		slot[i] = j
		if j < 0 {
			need++
			continue
		}
		// The port is part of the binding: a second client cloning both
		// the MAC and the address of the first is still refused.
		if b := &t.slots[j]; b.mac != mac || b.port != c.port {
			return IPBindingConflict
		}
	}
	if need == 0 {
		for i := 0; i < c.nclaims; i++ {
			t.slots[slot[i]].last = now
		}
		return Pass
	}
	u := portUser{uid: -1}
	if int(c.port) < len(c.p.users) {
		u = c.p.users[c.port]
	}
	var source [2]Source
	firstUse := 0
	for i := 0; i < c.nclaims; i++ {
		if slot[i] >= 0 {
			continue
		}
		s, r := c.p.source(&c.claims[i], u)
		if r != Pass {
			return r
		}
		if source[i] = s; s == FirstUse {
			firstUse++
		}
	}
	if t.portFull(c.port, need) {
		return PortBindingLimit
	}
	if t.ownerFull(u.owner, firstUse) {
		return UserBindingLimit
	}
	if t.count+need > t.max {
		return BindingTableFull
	}
	for i := 0; i < c.nclaims; i++ {
		if slot[i] >= 0 {
			// Linear probing never moves an entry on insert, so the slot
			// found above is still this key's.
			t.slots[slot[i]].last = now
		} else {
			c.slotHints[c.port%slotHints] = uint32(t.insert(&c.claims[i], mac, c.port, u.owner, source[i], now))
		}
	}
	return Pass
}

// refreshHinted is bind's refresh of the frame's one claim, the path of
// nearly every frame, taken when the port's slot hint holds the claim
// bound to this client: it notes the use and reports true, as bind would
// have. Otherwise it changes nothing and bind decides. Not with
// --ip-source dhcp, where bindLeased checks leased claims against the
// leases (and only there does a frame release any), nor on a shared
// policy, where the table changes only under the lock.
//
// It repeats slotOf's test of the hint rather than sharing it, to stay
// small enough to be inlined into Bind: a shared helper made it a call,
// +5 % a frame (BenchmarkVerdictTCP).
func (c *Checker) refreshHinted(now int64) bool {
	t := &c.p.table
	j := c.slotHints[c.port%slotHints] & t.mask
	if int(j) >= len(t.slots) {
		return false
	}
	b := &t.slots[j]
	if !b.used || b.key != c.claims[0] || b.mac != [6]byte(c.frame[6:12]) || b.port != c.port {
		return false
	}
	b.last = now
	return true
}

// slotHints is the number of ports whose last binding slot a Checker
// remembers, direct-mapped by port number.
const slotHints = 256

// slotOf is t.find(k), tried first at the slot where the port's last
// claim was: a client sends from one address frame after frame, and one
// slot read and key compare then replace the hash and the probe. The hint
// is only ever a guess: keys are unique in the table, so the slot whose
// key is k is the slot find would return, however the table changed since
// the hint was taken.
func (c *Checker) slotOf(k *bindKey) int {
	t := &c.p.table
	h := &c.slotHints[c.port%slotHints]
	if j := *h & t.mask; int(j) < len(t.slots) && t.slots[j].used && t.slots[j].key == *k {
		return int(j)
	}
	j := t.find(k)
	if j >= 0 {
		*h = uint32(j)
	}
	return j
}
