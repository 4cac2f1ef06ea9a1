package engine

import "github.com/vknetd/vknetd/ring"

// msgTransport is the original vknetd protocol: a SOCK_SEQPACKET client,
// one frame per message, read and written in batches.
type msgTransport struct {
	io  *portIO
	msg msgBatch
}

func newMsgTransport(io *portIO) *msgTransport {
	return &msgTransport{io: io, msg: newMsgBatch(io.batch)}
}

func (*msgTransport) kind() string { return "seqpacket" }

func (t *msgTransport) read(p *port, refs []ring.Ref) (int, error) {
	return t.msg.recv(t.io, p, refs)
}

func (t *msgTransport) write(p *port) error { return t.msg.send(t.io, p) }

func (*msgTransport) close(p *port) { closeFd(p.fd) }

// monitorTransport is a monitor (vknetctl monitor): it receives one
// message per frame like a SEQPACKET client; whatever it sends is read and
// dropped, so its socket never fills.
type monitorTransport struct{ msgTransport }

func newMonitorTransport(io *portIO) *monitorTransport {
	return &monitorTransport{msgTransport{io: io, msg: newMsgBatch(io.batch)}}
}

func (*monitorTransport) kind() string { return "monitor" }

func (t *monitorTransport) read(p *port, refs []ring.Ref) (int, error) {
	n, err := t.msg.recv(t.io, p, refs)
	if n > 0 {
		p.cnt.drops[DropMonitorInput] += uint64(n)
	}
	return 0, err
}
