package secure

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

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
		return nil, errNotSecure
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; on later
	// ones this does nothing. A failure shows as the load's error below.
	_ = rlimit.RemoveMemlock()
	drops, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "vknetd_drops",
		Type:       dropsType,
		KeySize:    8,
		ValueSize:  8,
		MaxEntries: uint32(max(sockets, 1)),
	})
	if err != nil {
		return nil, fmt.Errorf("kernel filter: creating its counter map: %w", err)
	}
	prog, err := loadProgram(p, drops)
	if err != nil {
		drops.Close()
		return nil, err
	}
	return &KernelFilter{Program: prog, Drops: drops}, nil
}

var errNotSecure = errors.New("kernel filter: the policy is not secure (-U): there is nothing to filter")

// dropsType is the counter map's type; an adopted map must be one.
const dropsType = ebpf.LRUCPUHash

// loadProgram loads p's program counting into drops.
func loadProgram(p *Policy, drops *ebpf.Map) (*ebpf.Program, error) {
	insns := p.FilterInstructions()
	if err := insns.AssociateMap(DropsMapName, drops); err != nil {
		return nil, fmt.Errorf("kernel filter: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "vknetd_secure",
		Type:         ebpf.SocketFilter,
		License:      "GPL",
		Instructions: insns,
	})
	if err != nil {
		return nil, fmt.Errorf("kernel filter: loading the program: %w", err)
	}
	return prog, nil
}

// AdoptKernelFilter takes over the filter a previous daemon loaded, from
// its program's and counter map's fds (they are the filter's from here,
// closed on an error too). An upgraded daemon that may no longer load BPF
// (--user keeps CAP_NET_ADMIN alone) thus filters the clients that connect
// after the upgrade in the kernel too; and since the sockets it adopts keep
// their cookies, their counts go on in the same map.
//
// The program is used only if it is the one p builds (the kernel's tag of
// its instructions says so): a new binary whose rules differ loads its
// own, counting into the adopted map, which needs the privilege
// LoadKernelFilter does; without it the error says so, and the caller
// checks new clients in userspace alone rather than by another binary's
// rules.
func AdoptKernelFilter(p *Policy, progFd, dropsFd int) (*KernelFilter, error) {
	prog, err := ebpf.NewProgramFromFD(progFd)
	if err != nil {
		unix.Close(dropsFd)
		return nil, fmt.Errorf("kernel filter: adopting the program: %w", err)
	}
	drops, err := ebpf.NewMapFromFD(dropsFd)
	if err != nil {
		prog.Close()
		return nil, fmt.Errorf("kernel filter: adopting the counter map: %w", err)
	}
	k := &KernelFilter{Program: prog, Drops: drops}
	same, err := k.builtFor(p)
	if err != nil {
		k.Close()
		return nil, err
	}
	if same {
		return k, nil
	}
	prog.Close()
	if k.Program, err = loadProgram(p, drops); err != nil {
		drops.Close()
		return nil, fmt.Errorf("the previous daemon's kernel filter has other rules than this binary's, and %w", err)
	}
	return k, nil
}

// builtFor says whether k is p's filter: a socket filter whose kernel tag
// is that of p's instructions, counting in a map of the loader's shape.
func (k *KernelFilter) builtFor(p *Policy) (bool, error) {
	if !p.secure {
		return false, errNotSecure
	}
	if k.Program.Type() != ebpf.SocketFilter || k.Drops.Type() != dropsType || k.Drops.KeySize() != 8 || k.Drops.ValueSize() != 8 {
		return false, fmt.Errorf("kernel filter: adopted a %v program and a %v map, not a socket filter and its counters", k.Program.Type(), k.Drops.Type())
	}
	info, err := k.Program.Info()
	if err != nil {
		return false, fmt.Errorf("kernel filter: reading the adopted program's tag: %w", err)
	}
	// The instructions as loadProgram hands them to the kernel: the
	// jumps resolved (marshalling does it in place) and the map
	// associated. The tag hashes them with map references zeroed, so the
	// map the program was loaded with does not change it.
	insns := p.FilterInstructions()
	if err := insns.AssociateMap(DropsMapName, k.Drops); err != nil {
		return false, fmt.Errorf("kernel filter: %w", err)
	}
	if err := insns.Marshal(io.Discard, hostOrder()); err != nil {
		return false, fmt.Errorf("kernel filter: %w", err)
	}
	same, err := insns.HasTag(info.Tag, hostOrder())
	if err != nil {
		return false, fmt.Errorf("kernel filter: %w", err)
	}
	return same, nil
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

// hostOrder is this machine's byte order as asm marshals instructions: it
// knows binary.LittleEndian and binary.BigEndian, not NativeEndian.
func hostOrder() binary.ByteOrder {
	if binary.NativeEndian.Uint16([]byte{0, 1}) == 1 {
		return binary.BigEndian
	}
	return binary.LittleEndian
}
