package engine

// ClientFilter is secure mode's kernel half (secure.KernelFilter): a socket
// filter the kernel runs in a client's own sendmsg on the switch's end of
// its socket, dropping the frames it can judge alone before the switch
// ever reads them. The engine attaches it to every socket a client sends
// on that the kernel filters: accepted SEQPACKET clients, datagram
// listeners and the switch's connected socket for each datagram client.
// STREAM sockets are never filtered by the kernel (af_unix has no filter
// on its stream path), so their clients get the userspace checker alone,
// as every frame does anyway.
//
// The interface keeps the engine free of the eBPF loader: the command
// loads the program (it needs privilege) and hands it over.
type ClientFilter interface {
	// Attach filters what arrives on fd and returns the socket's cookie,
	// the key of its drop counter.
	Attach(fd int) (cookie uint64, err error)
	// Dropped returns how many frames the filter has dropped on the
	// socket with this cookie.
	Dropped(cookie uint64) (uint64, error)
	// Forget releases the counter of a socket that is closed.
	Forget(cookie uint64)
}

// attachFilter filters fd in the kernel in secure mode. Failing to attach
// costs only speed: the userspace checker still judges every frame.
func (e *Engine) attachFilter(fd int, what string) uint64 {
	if e.cfg.ClientFilter == nil || !e.secure {
		return 0
	}
	cookie, err := e.cfg.ClientFilter.Attach(fd)
	if err != nil {
		e.clientLog.Warn("kernel filter not attached; this socket is filtered in userspace only", "socket", what, "err", err)
		return 0
	}
	return cookie
}

// kernelDropped reads the kernel filter's drop count for a socket, 0 when
// there is none or it cannot be read.
func (e *Engine) kernelDropped(cookie uint64) uint64 {
	if cookie == 0 {
		return 0
	}
	n, err := e.cfg.ClientFilter.Dropped(cookie)
	if err != nil {
		return 0
	}
	return n
}

// withKernelDrops returns p's counters with its socket's kernel-filter
// drops, which the kernel counts apart.
func (e *Engine) withKernelDrops(p *port) counters {
	c := p.cnt
	c.drops[DropKernelFilter] += e.kernelDropped(p.filterCookie)
	return c
}

// forgetFilter folds a closing port's kernel drops into its counters and
// frees the kernel's counter.
func (e *Engine) forgetFilter(p *port) {
	if p.filterCookie == 0 {
		return
	}
	p.cnt.drops[DropKernelFilter] += e.kernelDropped(p.filterCookie)
	e.cfg.ClientFilter.Forget(p.filterCookie)
	p.filterCookie = 0
}

// listenerKernelDrops is what the kernel filter dropped on datagram
// listeners: the filter cannot tell which client sent those frames.
func (e *Engine) listenerKernelDrops() uint64 {
	var n uint64
	for i := range e.listeners {
		n += e.kernelDropped(e.listeners[i].filterCookie)
	}
	return n
}

// Refilter attaches this engine's kernel filter again to every socket it
// filters: its datagram listeners and its clients' sockets. A new daemon
// that a handover hands them to attaches its own filter to the same
// sockets (they are shared, not copies) while it adopts them, before it
// is told to serve; if it fails then, its program, maybe with other
// rules, would stay on the sockets this engine goes on serving. Call it
// before Thaw, once the new process can attach nothing more: the loops
// are parked, so their ports hold still.
func (f *Frozen) Refilter() {
	e := f.e
	if e.cfg.ClientFilter == nil || !e.secure {
		return
	}
	for i := range e.listeners {
		ls := &e.listeners[i]
		if ls.filterCookie != 0 {
			e.attachFilter(ls.Fd, ls.Path)
		}
	}
	for _, l := range e.loops {
		for _, p := range l.live {
			if p.filterCookie != 0 && !p.dead && p.fd >= 0 {
				e.attachFilter(p.fd, p.name)
			}
		}
	}
}
