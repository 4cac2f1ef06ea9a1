package vhostuser

// Virtio and vhost-user feature bits (virtio 1.x spec, QEMU vhost-user.rst).
const (
	featNetMrgRxbuf       = 15 // VIRTIO_NET_F_MRG_RXBUF: an RX frame may span several chains
	featRingIndirectDesc  = 28 // VIRTIO_RING_F_INDIRECT_DESC: never offered
	featRingEventIdx      = 29 // VIRTIO_RING_F_EVENT_IDX: used_event / avail_event
	featProtocolFeatures  = 30 // VHOST_USER_F_PROTOCOL_FEATURES
	featVersion1          = 32 // VIRTIO_F_VERSION_1
	protoFeatMQ           = 0  // VHOST_USER_PROTOCOL_F_MQ: not offered, one queue pair
	protoFeatReplyAck     = 3  // VHOST_USER_PROTOCOL_F_REPLY_ACK
	protoFeatConfig       = 9  // VHOST_USER_PROTOCOL_F_CONFIG: not offered
	protoFeatResetDevice  = 13 // VHOST_USER_PROTOCOL_F_RESET_DEVICE: not offered (RESET_OWNER does)
	protoFeatConfigMemSls = 15 // VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS: not offered, 8 regions
)

// offeredFeatures is what GET_FEATURES answers. Offloads (CSUM, GUEST_CSUM,
// HOST_TSO4/6, GUEST_TSO4/6) belong here once the engine carries
// virtio_net_hdr beside frames (DESIGN.md, "Superframes"); until then the
// header is stripped on TX and written zeroed on RX, which is only correct
// because none of them is negotiated. NOTIFY_ON_EMPTY and ANY_LAYOUT are
// left out: the first would oblige us to call on an empty ring, the second
// is implied by VERSION_1 and we handle any layout regardless.
const offeredFeatures = 1<<featNetMrgRxbuf | 1<<featRingEventIdx |
	1<<featProtocolFeatures | 1<<featVersion1

// offeredProtocolFeatures is what GET_PROTOCOL_FEATURES answers: only
// REPLY_ACK, so the front-end can wait for SET_MEM_TABLE to be mapped. No
// MQ (one RX/TX pair), no CONFIG (virtio-net's config space stays in
// QEMU), no slots beyond the baseline 8 regions.
const offeredProtocolFeatures = 1 << protoFeatReplyAck

// virtioNetHdrLen is the size of the header before every frame: 12 bytes
// when num_buffers is present (VERSION_1 or MRG_RXBUF), else 10.
func virtioNetHdrLen(features uint64) int {
	if features&(1<<featVersion1|1<<featNetMrgRxbuf) != 0 {
		return 12
	}
	return 10
}
