package engine

import (
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// epollPoller is level-triggered epoll plus an eventfd for wake-ups.
// noPwait2 says the kernel has no epoll_pwait2 (before Linux 5.11):
// waits are then rounded up to epoll_wait's milliseconds.
type epollPoller struct {
	epfd     int
	wakefd   int
	raw      []unix.EpollEvent
	noPwait2 bool
}

func newPoller(maxEvents int) (poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	p := &epollPoller{epfd: epfd, wakefd: wakefd, raw: make([]unix.EpollEvent, maxEvents)}
	if err := p.add(wakefd, tokenWake); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

func (p *epollPoller) ctl(op, fd int, token uint32, write bool) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(token)}
	if write {
		ev.Events |= unix.EPOLLOUT
	}
	if err := unix.EpollCtl(p.epfd, op, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl fd %d: %w", fd, err)
	}
	return nil
}

func (p *epollPoller) add(fd int, token uint32) error {
	return p.ctl(unix.EPOLL_CTL_ADD, fd, token, false)
}

func (p *epollPoller) setWrite(fd int, token uint32, on bool) error {
	return p.ctl(unix.EPOLL_CTL_MOD, fd, token, on)
}

func (p *epollPoller) remove(fd int) error {
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil); err != nil {
		return fmt.Errorf("epoll_ctl del fd %d: %w", fd, err)
	}
	return nil
}

func (p *epollPoller) wait(events []event, timeout time.Duration) (int, error) {
	raw := p.raw
	if len(events) < len(raw) {
		raw = raw[:len(events)]
	}
	n, err := p.epollWait(raw, max(timeout, 0))
	if err != nil {
		if err == unix.EINTR {
			return 0, nil
		}
		return 0, fmt.Errorf("epoll_wait: %w", err)
	}
	for i := 0; i < n; i++ {
		e := raw[i].Events
		events[i] = event{
			token:    uint32(raw[i].Fd),
			readable: e&unix.EPOLLIN != 0,
			writable: e&unix.EPOLLOUT != 0,
			hangup:   e&(unix.EPOLLHUP|unix.EPOLLRDHUP|unix.EPOLLERR) != 0,
		}
	}
	return n, nil
}

// epollWait is epoll_pwait2, whose timeout is a timespec: a loop that
// looks at its guests' rings every few microseconds (Config.Coalesce)
// cannot sleep in epoll_wait's milliseconds. x/sys has no wrapper.
func (p *epollPoller) epollWait(raw []unix.EpollEvent, timeout time.Duration) (int, error) {
	if p.noPwait2 || len(raw) == 0 {
		ms := (timeout + time.Millisecond - 1) / time.Millisecond
		return unix.EpollWait(p.epfd, raw, int(ms))
	}
	ts := unix.NsecToTimespec(int64(timeout))
	n, _, errno := unix.Syscall6(unix.SYS_EPOLL_PWAIT2, uintptr(p.epfd), uintptr(unsafe.Pointer(&raw[0])),
		uintptr(len(raw)), uintptr(unsafe.Pointer(&ts)), 0, 0)
	switch errno {
	case 0:
		return int(n), nil
	case unix.ENOSYS:
		p.noPwait2 = true
		return p.epollWait(raw, timeout)
	}
	return 0, errno
}

func (p *epollPoller) wake() error {
	one := [8]byte{1}
	_, err := unix.Write(p.wakefd, one[:])
	if err == unix.EAGAIN { // counter saturated: a wake-up is already pending
		err = nil
	}
	return err
}

func (p *epollPoller) drainWake() {
	var buf [8]byte
	unix.Read(p.wakefd, buf[:])
}

func (p *epollPoller) close() error {
	unix.Close(p.wakefd)
	return unix.Close(p.epfd)
}
