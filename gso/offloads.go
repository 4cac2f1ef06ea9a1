package gso

// Offloads is what a port can take whole, as it negotiated them: a
// vhost-user guest's GUEST_CSUM and GUEST_TSO4/6 (VIRTIO_NET_F_*), a TAP's
// TUNSETOFFLOAD flags. A frame whose header asks for more than its
// destination negotiated is cut (Split) or finished (CompleteChecksum) for
// that port instead.
type Offloads uint8

const (
	// OffloadCsum: frames with FlagNeedsCsum (GUEST_CSUM, TUN_F_CSUM).
	OffloadCsum Offloads = 1 << iota
	// OffloadTSO4: GSOTCPv4 superframes (GUEST_TSO4, TUN_F_TSO4).
	OffloadTSO4
	// OffloadTSO6: GSOTCPv6 superframes (GUEST_TSO6, TUN_F_TSO6).
	OffloadTSO6
	// OffloadECN: TCP superframes with GSOECN (GUEST_ECN, TUN_F_TSO_ECN).
	OffloadECN
	// OffloadUSO: GSOUDPL4 superframes (GUEST_USO4/6, TUN_F_USO4/6).
	OffloadUSO
)

var offloadNames = [...]string{"csum", "tso4", "tso6", "ecn", "uso"}

// String lists the offloads by name, comma-separated ("csum,tso4,tso6"),
// or "-" for none, as listings show them.
func (o Offloads) String() string {
	if o == 0 {
		return "-"
	}
	s := ""
	for i, name := range offloadNames {
		if o&(1<<i) != 0 {
			if s != "" {
				s += ","
			}
			s += name
		}
	}
	return s
}

// Takes reports whether a port with offloads o can be given a frame with
// header h as it is. A superframe always needs checksum offload too: its
// segments' checksums are left to whoever cuts it.
func (o Offloads) Takes(h VirtioNetHdr) bool {
	var need Offloads
	if h.Flags&FlagNeedsCsum != 0 {
		need |= OffloadCsum
	}
	switch h.GSOType.Kind() {
	case GSONone:
	case GSOTCPv4:
		need |= OffloadCsum | OffloadTSO4
	case GSOTCPv6:
		need |= OffloadCsum | OffloadTSO6
	case GSOUDPL4:
		need |= OffloadCsum | OffloadUSO
	default:
		return false // UFO and unknown types are never passed on
	}
	if h.GSOType&GSOECN != 0 {
		need |= OffloadECN
	}
	return o&need == need
}

// Offloaded reports whether h leaves work to whoever takes the frame: a
// GSO type, or a checksum left to finish.
func (h VirtioNetHdr) Offloaded() bool {
	return h.GSOType != GSONone || h.Flags&FlagNeedsCsum != 0
}
