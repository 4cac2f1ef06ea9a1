package engine

import (
	"errors"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/ring"
	"github.com/vknetd/vknetd/tap"
)

// tapTransport is the host's side of the switch: the TAP device, read and
// written one frame per syscall by package tap. Its fd belongs to whoever
// opened the TAP, who closes it after Run.
type tapTransport struct {
	io      *portIO
	bufs    [][]byte // the batch's buffers, as tap wants them
	sizes   []int
	refused []bool
}

func newTapTransport(io *portIO) *tapTransport {
	return &tapTransport{io: io, bufs: make([][]byte, io.batch), sizes: make([]int, io.batch),
		refused: make([]bool, io.batch)}
}

func (*tapTransport) kind() string { return "tap" }

func (t *tapTransport) read(p *port, refs []ring.Ref) (int, error) {
	bufs := t.bufs[:len(refs)]
	for i, r := range refs {
		bufs[i] = t.io.pool.Buf(r)
	}
	n, err := tap.ReadFrames(p.fd, bufs, t.sizes)
	t.io.syscalls += uint64(n)
	if n < len(bufs) {
		t.io.syscalls++ // the read that found nothing more
	}
	for i := 0; i < n; i++ {
		t.io.pool.SetLen(refs[i], t.sizes[i])
	}
	return n, err
}

func (t *tapTransport) write(p *port) error {
	frames := t.bufs[:min(p.txq.Len(), len(t.bufs))]
	for i := range frames {
		frames[i] = t.io.pool.Frame(p.txq.At(i))
	}
	done, err := tap.WriteFrames(p.fd, frames, t.refused)
	t.io.syscalls += uint64(done)
	if done < len(frames) {
		t.io.syscalls++ // the write the device pushed back
	}
	for i := 0; i < done; i++ {
		r := p.txq.At(i)
		if t.refused[i] {
			p.cnt.drops[DropSendError]++
		} else {
			p.cnt.txFrames++
			p.cnt.txBytes += uint64(t.io.pool.Len(r))
		}
		t.io.pool.Release(r)
	}
	p.txq.Drop(done)
	if errors.Is(err, unix.EAGAIN) {
		return errWouldBlock
	}
	return err
}

func (*tapTransport) close(*port) {} // the TAP's owner closes its fd
