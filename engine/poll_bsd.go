//go:build dragonfly || freebsd

package engine

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// kqueuePoller gives the loop the same level-triggered contract as epoll:
// kqueue filters are level-triggered unless EV_CLEAR is set. A pipe wakes it.
type kqueuePoller struct {
	kq     int
	wakeR  int
	wakeW  int
	raw    []unix.Kevent_t
	tokens map[int]uint32 // fd -> token; kqueue's udata is not portable across the BSDs
}

func newPoller(maxEvents int) (poller, error) {
	kq, err := unix.Kqueue()
	if err != nil {
		return nil, fmt.Errorf("kqueue: %w", err)
	}
	unix.CloseOnExec(kq)
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		unix.Close(kq)
		return nil, fmt.Errorf("pipe: %w", err)
	}
	p := &kqueuePoller{kq: kq, wakeR: fds[0], wakeW: fds[1],
		raw: make([]unix.Kevent_t, maxEvents), tokens: make(map[int]uint32)}
	if err := p.add(p.wakeR, tokenWake); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

func (p *kqueuePoller) change(fd int, filter int16, flags uint16) error {
	var ev unix.Kevent_t
	unix.SetKevent(&ev, fd, int(filter), int(flags))
	if _, err := unix.Kevent(p.kq, []unix.Kevent_t{ev}, nil, nil); err != nil {
		return fmt.Errorf("kevent fd %d: %w", fd, err)
	}
	return nil
}

func (p *kqueuePoller) add(fd int, token uint32) error {
	p.tokens[fd] = token
	return p.change(fd, unix.EVFILT_READ, unix.EV_ADD|unix.EV_ENABLE)
}

func (p *kqueuePoller) setWrite(fd int, token uint32, on bool) error {
	if on {
		return p.change(fd, unix.EVFILT_WRITE, unix.EV_ADD|unix.EV_ENABLE)
	}
	err := p.change(fd, unix.EVFILT_WRITE, unix.EV_DELETE)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

func (p *kqueuePoller) remove(fd int) error {
	delete(p.tokens, fd)
	// Closing the fd removes its filters; deleting first keeps a reused fd clean.
	p.change(fd, unix.EVFILT_WRITE, unix.EV_DELETE)
	return p.change(fd, unix.EVFILT_READ, unix.EV_DELETE)
}

func (p *kqueuePoller) wait(events []event, timeout time.Duration) (int, error) {
	raw := p.raw
	if len(events) < len(raw) {
		raw = raw[:len(events)]
	}
	ts := unix.NsecToTimespec(int64(max(timeout, 0)))
	n, err := unix.Kevent(p.kq, nil, raw, &ts)
	if err != nil {
		if err == unix.EINTR {
			return 0, nil
		}
		return 0, fmt.Errorf("kevent wait: %w", err)
	}
	out := 0
	for i := 0; i < n; i++ {
		fd := int(raw[i].Ident)
		token, ok := p.tokens[fd]
		if !ok {
			continue
		}
		ev := event{token: token, hangup: raw[i].Flags&(unix.EV_EOF|unix.EV_ERROR) != 0}
		switch raw[i].Filter {
		case unix.EVFILT_READ:
			ev.readable = true
		case unix.EVFILT_WRITE:
			ev.writable = true
		}
		events[out] = ev
		out++
	}
	return out, nil
}

func (p *kqueuePoller) wake() error {
	_, err := unix.Write(p.wakeW, []byte{1})
	if err == unix.EAGAIN {
		err = nil
	}
	return err
}

func (p *kqueuePoller) drainWake() {
	var buf [64]byte
	for {
		if n, _ := unix.Read(p.wakeR, buf[:]); n <= 0 {
			return
		}
	}
}

func (p *kqueuePoller) close() error {
	unix.Close(p.wakeR)
	unix.Close(p.wakeW)
	return unix.Close(p.kq)
}
