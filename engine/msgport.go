package engine

import (
	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/ring"
)

// msgTransport is the original vknetd protocol: a SOCK_SEQPACKET client,
// one frame per message, read and written in batches.
type msgTransport struct {
	polledByEngine
	io  *portIO
	fd  int
	msg msgBatch
}

func newMsgTransport(io *portIO, fd int) *msgTransport {
	return &msgTransport{io: io, fd: fd, msg: newMsgBatch(io.batch)}
}

func (*msgTransport) caps() transportCaps { return transportCaps{kind: "seqpacket"} }

func (t *msgTransport) read(refs []ring.Ref, hungUp bool) readResult {
	n, err := t.msg.recv(t.io, t.fd, hungUp, refs)
	return readResult{n: n, err: err}
}

func (t *msgTransport) write(q txView) writeResult { return t.msg.send(t.io, t.fd, q) }

func (t *msgTransport) close() { closeFd(t.fd) }

// monitorTransport is a monitor (vknetctl monitor): it receives one
// message per frame like a SEQPACKET client; whatever it sends is read and
// dropped, so its socket never fills.
type monitorTransport struct{ msgTransport }

func newMonitorTransport(io *portIO, fd int) *monitorTransport {
	return &monitorTransport{msgTransport{io: io, fd: fd, msg: newMsgBatch(io.batch)}}
}

// caps: a monitor sees frames as they crossed the switch: superframes
// whole (without their header), as tcpdump shows them on a host with
// TSO, not as the cut some ports got.
func (*monitorTransport) caps() transportCaps {
	return transportCaps{kind: "monitor",
		offloads: gso.OffloadCsum | gso.OffloadTSO4 | gso.OffloadTSO6 | gso.OffloadECN | gso.OffloadUSO}
}

func (t *monitorTransport) read(refs []ring.Ref, hungUp bool) readResult {
	n, err := t.msg.recv(t.io, t.fd, hungUp, refs)
	var res readResult
	if n > 0 {
		res.dropped.drop(DropMonitorInput, uint32(n))
	}
	res.err = err
	return res
}
