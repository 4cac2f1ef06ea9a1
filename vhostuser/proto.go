package vhostuser

import (
	"encoding/binary"
	"fmt"
)

// request is a front-end message type (QEMU docs/interop/vhost-user.rst,
// "Front-end message types").
type request uint32

const (
	reqGetFeatures         request = 1
	reqSetFeatures         request = 2
	reqSetOwner            request = 3
	reqResetOwner          request = 4
	reqSetMemTable         request = 5
	reqSetLogBase          request = 6
	reqSetLogFD            request = 7
	reqSetVringNum         request = 8
	reqSetVringAddr        request = 9
	reqSetVringBase        request = 10
	reqGetVringBase        request = 11
	reqSetVringKick        request = 12
	reqSetVringCall        request = 13
	reqSetVringErr         request = 14
	reqGetProtocolFeatures request = 15
	reqSetProtocolFeatures request = 16
	reqGetQueueNum         request = 17
	reqSetVringEnable      request = 18
	reqSendRARP            request = 19
	reqNetSetMTU           request = 20
	reqSetBackendReqFD     request = 21
	reqIOTLBMsg            request = 22
	reqSetVringEndian      request = 23
	reqGetConfig           request = 24
	reqSetConfig           request = 25
	reqCreateCryptoSession request = 26
	reqCloseCryptoSession  request = 27
	reqPostcopyAdvise      request = 28
	reqPostcopyListen      request = 29
	reqPostcopyEnd         request = 30
	reqGetInflightFD       request = 31
	reqSetInflightFD       request = 32
	reqGPUSetSocket        request = 33
	reqResetDevice         request = 34
	reqVringKick           request = 35
	reqGetMaxMemSlots      request = 36
	reqAddMemReg           request = 37
	reqRemMemReg           request = 38
	reqSetStatus           request = 39
	reqGetStatus           request = 40
	reqGetSharedObject     request = 41
	reqSetDeviceStateFD    request = 42
	reqCheckDeviceState    request = 43
)

var requestNames = [...]string{
	reqGetFeatures: "GET_FEATURES", reqSetFeatures: "SET_FEATURES", reqSetOwner: "SET_OWNER",
	reqResetOwner: "RESET_OWNER", reqSetMemTable: "SET_MEM_TABLE", reqSetLogBase: "SET_LOG_BASE",
	reqSetLogFD: "SET_LOG_FD", reqSetVringNum: "SET_VRING_NUM", reqSetVringAddr: "SET_VRING_ADDR",
	reqSetVringBase: "SET_VRING_BASE", reqGetVringBase: "GET_VRING_BASE", reqSetVringKick: "SET_VRING_KICK",
	reqSetVringCall: "SET_VRING_CALL", reqSetVringErr: "SET_VRING_ERR",
	reqGetProtocolFeatures: "GET_PROTOCOL_FEATURES", reqSetProtocolFeatures: "SET_PROTOCOL_FEATURES",
	reqGetQueueNum: "GET_QUEUE_NUM", reqSetVringEnable: "SET_VRING_ENABLE", reqSendRARP: "SEND_RARP",
	reqNetSetMTU: "NET_SET_MTU", reqSetBackendReqFD: "SET_BACKEND_REQ_FD", reqIOTLBMsg: "IOTLB_MSG",
	reqSetVringEndian: "SET_VRING_ENDIAN", reqGetConfig: "GET_CONFIG", reqSetConfig: "SET_CONFIG",
	reqCreateCryptoSession: "CREATE_CRYPTO_SESSION", reqCloseCryptoSession: "CLOSE_CRYPTO_SESSION",
	reqPostcopyAdvise: "POSTCOPY_ADVISE", reqPostcopyListen: "POSTCOPY_LISTEN", reqPostcopyEnd: "POSTCOPY_END",
	reqGetInflightFD: "GET_INFLIGHT_FD", reqSetInflightFD: "SET_INFLIGHT_FD", reqGPUSetSocket: "GPU_SET_SOCKET",
	reqResetDevice: "RESET_DEVICE", reqVringKick: "VRING_KICK", reqGetMaxMemSlots: "GET_MAX_MEM_SLOTS",
	reqAddMemReg: "ADD_MEM_REG", reqRemMemReg: "REM_MEM_REG", reqSetStatus: "SET_STATUS",
	reqGetStatus: "GET_STATUS", reqGetSharedObject: "GET_SHARED_OBJECT",
	reqSetDeviceStateFD: "SET_DEVICE_STATE_FD", reqCheckDeviceState: "CHECK_DEVICE_STATE",
}

func (r request) String() string {
	if int(r) < len(requestNames) && requestNames[r] != "" {
		return fmt.Sprintf("%s (%d)", requestNames[r], uint32(r))
	}
	return fmt.Sprintf("request %d", uint32(r))
}

// alwaysReplies says whether the spec has the back-end answer r whatever
// the flags say: an unknown one of these cannot be ignored, as the
// front-end waits for the answer.
func (r request) alwaysReplies() bool {
	switch r {
	case reqGetFeatures, reqSetLogBase, reqGetVringBase, reqGetProtocolFeatures, reqGetQueueNum,
		reqGetConfig, reqCreateCryptoSession, reqPostcopyAdvise, reqGetInflightFD,
		reqGetMaxMemSlots, reqGetStatus, reqGetSharedObject, reqSetDeviceStateFD, reqCheckDeviceState:
		return true
	}
	return false
}

// Message header: request, flags, payload size, little-endian u32 each.
const (
	headerSize    = 12
	maxPayload    = 4096 // the largest we know is 268 (GET_CONFIG); anything near this is garbage
	maxMessageFDs = maxRegions

	flagVersionMask = 0x3
	flagVersion1    = 0x1
	flagReply       = 1 << 2
	flagNeedReply   = 1 << 3
)

type header struct {
	req   request
	flags uint32
	size  uint32
}

func (h header) needReply() bool { return h.flags&flagNeedReply != 0 }

// parseHeader decodes and checks the 12-byte header of a front-end message.
func parseHeader(b []byte) (header, error) {
	h := header{
		req:   request(binary.LittleEndian.Uint32(b[0:])),
		flags: binary.LittleEndian.Uint32(b[4:]),
		size:  binary.LittleEndian.Uint32(b[8:]),
	}
	switch {
	case h.flags&flagVersionMask != flagVersion1:
		return h, violation("%v: protocol version %d, want 1", h.req, h.flags&flagVersionMask)
	case h.flags&flagReply != 0:
		return h, violation("%v: front-end sent a reply", h.req)
	case h.size > maxPayload:
		return h, violation("%v: payload of %d bytes, at most %d", h.req, h.size, maxPayload)
	}
	return h, nil
}

// Payload decoders. Each checks the payload is long enough; a longer one
// is accepted (front-ends differ in how they pad), its tail ignored.

func payloadU64(h header, p []byte) (uint64, error) {
	if len(p) < 8 {
		return 0, violation("%v: payload of %d bytes, want 8", h.req, len(p))
	}
	return binary.LittleEndian.Uint64(p), nil
}

// vringState is the payload of SET_VRING_NUM/BASE/ENABLE and GET_VRING_BASE.
type vringState struct{ index, num uint32 }

func payloadState(h header, p []byte) (vringState, error) {
	if len(p) < 8 {
		return vringState{}, violation("%v: payload of %d bytes, want 8", h.req, len(p))
	}
	return vringState{binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint32(p[4:])}, nil
}

// vringAddr is the payload of SET_VRING_ADDR: front-end virtual addresses.
type vringAddr struct {
	index, flags           uint32
	desc, used, avail, log uint64
}

func payloadAddr(h header, p []byte) (vringAddr, error) {
	if len(p) < 40 {
		return vringAddr{}, violation("%v: payload of %d bytes, want 40", h.req, len(p))
	}
	le := binary.LittleEndian
	return vringAddr{
		index: le.Uint32(p), flags: le.Uint32(p[4:]),
		desc: le.Uint64(p[8:]), used: le.Uint64(p[16:]), avail: le.Uint64(p[24:]), log: le.Uint64(p[32:]),
	}, nil
}

// logBase is the payload of SET_LOG_BASE: the log is size bytes of the fd
// that comes with it, from offset on.
type logBase struct{ size, offset uint64 }

func payloadLog(h header, p []byte) (logBase, error) {
	if len(p) < 16 {
		return logBase{}, violation("%v: payload of %d bytes, want 16 (log size and offset)", h.req, len(p))
	}
	return logBase{binary.LittleEndian.Uint64(p), binary.LittleEndian.Uint64(p[8:])}, nil
}

// payloadMemTable decodes SET_MEM_TABLE's region count and regions into
// regs, returning how many there are.
func payloadMemTable(h header, p []byte, regs *[maxRegions]Region) (int, error) {
	if len(p) < 8 {
		return 0, violation("%v: payload of %d bytes, want at least 8", h.req, len(p))
	}
	n := binary.LittleEndian.Uint32(p)
	if n == 0 || n > maxRegions {
		return 0, violation("%v: %d regions, want 1 to %d", h.req, n, maxRegions)
	}
	if uint64(len(p)) < 8+32*uint64(n) {
		return 0, violation("%v: %d regions in a payload of %d bytes", h.req, n, len(p))
	}
	le := binary.LittleEndian
	for i := range int(n) {
		r := p[8+32*i:]
		regs[i] = Region{GuestAddr: le.Uint64(r), Size: le.Uint64(r[8:]), UserAddr: le.Uint64(r[16:]), MmapOffset: le.Uint64(r[24:])}
	}
	return int(n), nil
}

// Payload of SET_VRING_KICK/CALL/ERR: the ring in the low byte; bit 8 set
// means no fd comes with it (polling), which we do not support for kicks.
const (
	vringIndexMask = 0xff
	vringNoFD      = 1 << 8
)

// appendReply encodes a back-end reply to h with payload p.
func appendReply(dst []byte, h header, p []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(h.req))
	dst = binary.LittleEndian.AppendUint32(dst, flagVersion1|flagReply)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(p)))
	return append(dst, p...)
}
