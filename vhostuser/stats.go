package vhostuser

// Stats counts what a device moved and dropped. The engine keeps its own
// per-port counters for forwarded frames; these say what happened before a
// frame reached it or after it left.
type Stats struct {
	TXFrames   uint64 // frames taken from the guest's TX ring
	TXBytes    uint64
	TXOversize uint64 // frames longer than the caller's buffer: dropped, never cut
	TXShort    uint64 // chains with no frame after the virtio-net header: dropped
	TXBadHdr   uint64 // headers asking for an offload the guest did not negotiate: dropped
	// TXHdrFlags and TXHdrGSOType count headers with flag bits or a
	// gso_type virtio-net does not define for a driver (0x80, RSC_INFO;
	// gso_type 2 or 6 to 0x7f): dropped, offloads negotiated or not.
	TXHdrFlags   uint64
	TXHdrGSOType uint64

	RXFrames   uint64 // frames written into the guest's RX ring
	RXBytes    uint64
	RXOversize uint64 // frames larger than the guest's posted buffers can hold: dropped
	// DirectFrames counts the RX frames written straight from another
	// guest's memory (WriteRXFrom: one copy of their rest); RestCopies
	// the split TX frames whose rest was copied into the caller's buffer
	// instead (CopyRest: two copies, as without SplitTX).
	DirectFrames uint64
	RestCopies   uint64

	Kicks uint64 // kick eventfd reads that found the guest had kicked
	Calls uint64 // call eventfd writes: one at most per batch

	Announces uint64 // RARP frames ReadTX made for the front-end (SEND_RARP)

	// PairTXFrames and PairRXFrames split TXFrames and RXFrames by queue
	// pair (k: TX ring 2k+1, RX ring 2k), so that a multi-queue guest's
	// spread over its rings can be seen (vknetctl ports -j, rx_queues
	// and tx_queues).
	PairTXFrames [MaxQueuePairs]uint64
	PairRXFrames [MaxQueuePairs]uint64
}

// add adds one call's counts (ReadTXBatch, WriteRXBatch) to the device's.
func (s *Stats) add(c *Stats) {
	s.TXFrames += c.TXFrames
	s.TXBytes += c.TXBytes
	s.TXOversize += c.TXOversize
	s.TXShort += c.TXShort
	s.TXBadHdr += c.TXBadHdr
	s.TXHdrFlags += c.TXHdrFlags
	s.TXHdrGSOType += c.TXHdrGSOType
	s.RXFrames += c.RXFrames
	s.RXBytes += c.RXBytes
	s.RXOversize += c.RXOversize
	s.DirectFrames += c.DirectFrames
	s.RestCopies += c.RestCopies
	s.Kicks += c.Kicks
	s.Calls += c.Calls
	s.Announces += c.Announces
	for k := range s.PairTXFrames {
		s.PairTXFrames[k] += c.PairTXFrames[k]
		s.PairRXFrames[k] += c.PairRXFrames[k]
	}
}
