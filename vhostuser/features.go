package vhostuser

import "github.com/vknetd/vknetd/gso"

// Virtio and vhost-user feature bits (virtio 1.x spec, QEMU vhost-user.rst).
const (
	featNetCsum           = 0  // VIRTIO_NET_F_CSUM: the guest may send a partial checksum
	featNetGuestCsum      = 1  // VIRTIO_NET_F_GUEST_CSUM: the guest takes partial checksums
	featNetGuestTSO4      = 7  // VIRTIO_NET_F_GUEST_TSO4: the guest takes TCPv4 superframes
	featNetGuestTSO6      = 8  // VIRTIO_NET_F_GUEST_TSO6
	featNetGuestECN       = 9  // VIRTIO_NET_F_GUEST_ECN: ... with the ECN bit
	featNetHostTSO4       = 11 // VIRTIO_NET_F_HOST_TSO4: the guest may send TCPv4 superframes
	featNetHostTSO6       = 12 // VIRTIO_NET_F_HOST_TSO6
	featNetHostECN        = 13 // VIRTIO_NET_F_HOST_ECN: ... with the ECN bit
	featNetMrgRxbuf       = 15 // VIRTIO_NET_F_MRG_RXBUF: an RX frame may span several chains
	featNetMQ             = 22 // VIRTIO_NET_F_MQ: several RX/TX queue pairs
	featNetGuestAnnounce  = 21 // VIRTIO_NET_F_GUEST_ANNOUNCE: the guest announces itself after a migration
	featLogAll            = 26 // VHOST_F_LOG_ALL: log every write into guest memory (migration)
	featRingIndirectDesc  = 28 // VIRTIO_RING_F_INDIRECT_DESC: never offered
	featRingEventIdx      = 29 // VIRTIO_RING_F_EVENT_IDX: used_event / avail_event
	featProtocolFeatures  = 30 // VHOST_USER_F_PROTOCOL_FEATURES
	featVersion1          = 32 // VIRTIO_F_VERSION_1
	featInOrder           = 35 // VIRTIO_F_IN_ORDER: chains are used in the order they were posted
	protoFeatMQ           = 0  // VHOST_USER_PROTOCOL_F_MQ: GET_QUEUE_NUM, queues past the first pair
	protoFeatLogShmfd     = 1  // VHOST_USER_PROTOCOL_F_LOG_SHMFD: the dirty log comes as a shared memory fd
	protoFeatRARP         = 2  // VHOST_USER_PROTOCOL_F_RARP: SEND_RARP
	protoFeatReplyAck     = 3  // VHOST_USER_PROTOCOL_F_REPLY_ACK
	protoFeatConfig       = 9  // VHOST_USER_PROTOCOL_F_CONFIG: not offered
	protoFeatResetDevice  = 13 // VHOST_USER_PROTOCOL_F_RESET_DEVICE: not offered (RESET_OWNER does)
	protoFeatConfigMemSls = 15 // VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS: not offered, 8 regions
)

// baseFeatures is what GET_FEATURES answers without Config.Offloads: the
// header is then stripped on TX and written zeroed on RX, which is only
// correct because no offload is negotiated. NOTIFY_ON_EMPTY and
// ANY_LAYOUT are left out: the first would oblige us to call on an empty
// ring, the second is implied by VERSION_1 and we handle any layout
// regardless.
//
// LOG_ALL lets the front-end migrate the guest (dirtylog.go).
// GUEST_ANNOUNCE is the guest's to use, not ours: QEMU offers it to the
// guest only when the back-end does, and a guest that takes it sends its
// own gratuitous ARPs after a migration, at QEMU's request through the
// config space and control queue that QEMU keeps; QEMU then sends no
// SEND_RARP.
//
// IN_ORDER promises the guest what the rings already do: every path
// takes a ring's chains in the order the avail ring lists them and
// returns each in that order (TX chains all, whether their frames are
// forwarded or dropped, after a split read as before it; RX chains as
// frames fill them, one frame's several in a row), so the used ring
// lists them in avail order too (TestChainsUsedInOrderTX, ...RX). A guest that
// takes the feature may skip the used entries' ids, and DPDK's
// virtio-user, which takes it by default, then runs its in-order
// paths, with a lighter ring walk on its side and its descriptors
// posted in table order. Nothing here relies on the guest's half of
// the feature (descriptors posted in table order): a guest that takes
// IN_ORDER and posts them in any order is served as any other.
//
// MQ: QEMU lets the guest see VIRTIO_NET_F_MQ only when the back-end
// offers it; the control queue that sets the pairs in use stays in QEMU,
// which then enables and disables our rings (SET_VRING_ENABLE), and so
// does max_virtqueue_pairs in the config space (we offer no CONFIG).
const baseFeatures = 1<<featNetMrgRxbuf | 1<<featRingEventIdx |
	1<<featProtocolFeatures | 1<<featVersion1 | 1<<featLogAll | 1<<featNetGuestAnnounce |
	1<<featNetMQ | 1<<featInOrder

// offloadFeatures are added with Config.Offloads: the engine then carries
// the virtio_net_hdr beside each frame (DESIGN.md, "Superframes"), so a
// guest may send superframes and partial checksums (CSUM, HOST_*) and be
// given them (GUEST_*). UFO (the kernel no longer makes it) and USO (not
// carried by the switch yet) are not offered.
const offloadFeatures = 1<<featNetCsum | 1<<featNetGuestCsum |
	1<<featNetGuestTSO4 | 1<<featNetGuestTSO6 | 1<<featNetGuestECN |
	1<<featNetHostTSO4 | 1<<featNetHostTSO6 | 1<<featNetHostECN

// offeredFeatures is what GET_FEATURES answers.
func offeredFeatures(offloads bool) uint64 {
	if offloads {
		return baseFeatures | offloadFeatures
	}
	return baseFeatures
}

// offeredProtocolFeatures is what GET_PROTOCOL_FEATURES answers:
// REPLY_ACK, so the front-end can wait for SET_MEM_TABLE to be mapped;
// LOG_SHMFD and RARP, for live migration (QEMU refuses to migrate a guest
// whose back-end lacks LOG_SHMFD); MQ, up to MaxQueuePairs pairs. No
// CONFIG (virtio-net's config space stays in QEMU), no slots beyond the
// baseline 8 regions.
const offeredProtocolFeatures = 1<<protoFeatReplyAck | 1<<protoFeatLogShmfd | 1<<protoFeatRARP | 1<<protoFeatMQ

// virtioNetHdrLen is the size of the header before every frame: 12 bytes
// when num_buffers is present (VERSION_1 or MRG_RXBUF), else 10.
func virtioNetHdrLen(features uint64) int {
	if features&(1<<featVersion1|1<<featNetMrgRxbuf) != 0 {
		return 12
	}
	return 10
}

// guestOffloads maps negotiated features to the offloads of one
// direction: the guest's receive side (GUEST_*) with guest true, its
// send side (CSUM, HOST_*) with guest false.
func guestOffloads(features uint64, guest bool) gso.Offloads {
	csum, tso4, tso6, ecn := featNetCsum, featNetHostTSO4, featNetHostTSO6, featNetHostECN
	if guest {
		csum, tso4, tso6, ecn = featNetGuestCsum, featNetGuestTSO4, featNetGuestTSO6, featNetGuestECN
	}
	var o gso.Offloads
	for _, m := range [...]struct {
		bit int
		o   gso.Offloads
	}{{csum, gso.OffloadCsum}, {tso4, gso.OffloadTSO4}, {tso6, gso.OffloadTSO6}, {ecn, gso.OffloadECN}} {
		if features&(1<<m.bit) != 0 {
			o |= m.o
		}
	}
	return o
}
