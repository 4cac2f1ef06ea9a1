package secure

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// KernelFilter is the loaded kernel half of secure mode: the program and
// its drop counter. Load it once, before the daemon drops its privileges
// (loading needs CAP_BPF or root); attaching it to a socket needs none.
type KernelFilter struct {
	Program *ebpf.Program
	// Drops counts the frames the program dropped per socket: a per-CPU
	// LRU hash from socket cookie to a 64-bit count. LRU, so that more
	// sockets than it holds evict the oldest counts instead of going
	// uncounted.
	Drops *ebpf.Map
}

// LoadKernelFilter builds p's filter (FilterInstructions) and loads it.
// sockets is how many sockets it may be attached to at once (clients and
// listeners), the size of its counter map.
// Its errors say what the kernel refused; a caller that cannot load it runs
// with the userspace Checker alone, which judges every frame anyway.
func LoadKernelFilter(p *Policy, sockets int) (*KernelFilter, error) {
	if !p.secure {
		return nil, errors.New("kernel filter: the policy is not secure (-U): there is nothing to filter")
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; on later
	// ones this does nothing. A failure shows as the load's error below.
	_ = rlimit.RemoveMemlock()
	drops, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "vknetd_drops",
		Type:       ebpf.LRUCPUHash,
		KeySize:    8,
		ValueSize:  8,
		MaxEntries: uint32(max(sockets, 1)),
	})
	if err != nil {
		return nil, fmt.Errorf("kernel filter: creating its counter map: %w", err)
	}
	insns := p.FilterInstructions()
	if err := insns.AssociateMap(DropsMapName, drops); err != nil {
		drops.Close()
		return nil, fmt.Errorf("kernel filter: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "vknetd_secure",
		Type:         ebpf.SocketFilter,
		License:      "GPL",
		Instructions: insns,
	})
	if err != nil {
		drops.Close()
		return nil, fmt.Errorf("kernel filter: loading the program: %w", err)
	}
	return &KernelFilter{Program: prog, Drops: drops}, nil
}

// Attach makes the kernel run the filter on every message sent to fd, in
// the sender's sendmsg, and returns fd's socket cookie, the key of its drop
// counter. It needs no privilege.
func (k *KernelFilter) Attach(fd int) (uint64, error) {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_BPF, k.Program.FD()); err != nil {
		return 0, fmt.Errorf("attaching the kernel filter (SO_ATTACH_BPF): %w", err)
	}
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("reading the socket's cookie (SO_COOKIE) for the kernel filter's counter: %w", err)
	}
	return cookie, nil
}

// Dropped returns how many frames the filter has dropped on the socket
// with this cookie, summed over the CPUs.
func (k *KernelFilter) Dropped(cookie uint64) (uint64, error) {
	var perCPU []uint64
	err := k.Drops.Lookup(cookie, &perCPU)
	switch {
	case errors.Is(err, ebpf.ErrKeyNotExist):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("reading the kernel filter's counter: %w", err)
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	return n, nil
}

// Forget deletes the counter of a socket that is closed (cookies are never
// reused, so it would only take room).
func (k *KernelFilter) Forget(cookie uint64) {
	_ = k.Drops.Delete(cookie)
}

// Close unloads the filter; sockets it is attached to keep their copy.
func (k *KernelFilter) Close() error {
	return errors.Join(k.Program.Close(), k.Drops.Close())
}
