// Package gso handles frames that carry a virtio_net_hdr: superframes of up
// to 64 KiB that a TAP with offloads, or a vhost-user guest with
// HOST_TSO/USO, hands over as one unit, and frames whose L4 checksum the
// sender left for the device to finish (NEEDS_CSUM).
//
// Everything here is a pure function over byte slices, so it is tested
// without a device (table and fuzz tests) and costs no allocation:
//
//   - [VirtioNetHdr] decodes and encodes the header (10 bytes, or 12 with
//     num_buffers).
//   - [Check] is secure mode's judgement of a header against its frame: the
//     header must describe the frame it comes with, or the frame is dropped
//     with a [Reason].
//   - [Split] cuts a superframe into MTU-sized frames, each with its own IP
//     length, IPv4 ID, TCP sequence number and flags, and full checksums,
//     for ports that do not take superframes.
//   - [CompleteChecksum] finishes a NEEDS_CSUM frame for a port that did
//     not negotiate checksum offload; [PartialChecksum] prepares a frame
//     (superframe or not) for a port that did, as a TSO write to a TAP
//     needs it.
//
// Frames are Ethernet frames: csum_start counts from the first byte of the
// destination MAC, as it does on a TAP (IFF_TAP) and on virtio-net. Up to
// two VLAN tags (802.1Q, 802.1ad) are understood and copied into every
// segment; secure mode drops tagged frames before they get here, -U passes
// them.
//
// Input is hostile: a guest writes the header and the frame. Nothing reads
// hdr_len, csum_start or csum_offset to find a header; the Ethernet, IP and
// TCP/UDP headers are parsed again, every length is bounds-checked, and a
// header that disagrees with the frame is an error, never a panic (the fuzz
// tests hold this).
package gso
