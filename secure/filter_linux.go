package secure

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// KernelFilter is the loaded kernel half of secure mode: the program and
// its drop counter. Load it once, before the daemon drops its privileges
// (loading needs CAP_BPF or root); attaching it to a socket needs none.
type KernelFilter struct {
	Program *ebpf.Program
	// Drops is a per-CPU array of one 64-bit counter: the frames the
	// program dropped, on every socket it is attached to.
	Drops *ebpf.Map
}

// LoadKernelFilter builds p's filter (FilterInstructions) and loads it.
// Its errors say what the kernel refused; a caller that cannot load it runs
// with the userspace Checker alone, which judges every frame anyway.
func LoadKernelFilter(p *Policy, mtu int) (*KernelFilter, error) {
	if !p.secure {
		return nil, errors.New("kernel filter: the policy is not secure (-U): there is nothing to filter")
	}
	drops, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "vknetd_drops",
		Type:       ebpf.PerCPUArray,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("kernel filter: creating its counter map: %w", err)
	}
	insns := p.FilterInstructions(mtu)
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

// Attach makes the kernel run the filter on every message sent to fd,
// in the sender's sendmsg. It needs no privilege.
func (k *KernelFilter) Attach(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_BPF, k.Program.FD()); err != nil {
		return fmt.Errorf("attaching the kernel filter (SO_ATTACH_BPF): %w", err)
	}
	return nil
}

// Dropped returns how many frames the filter has dropped since it was
// loaded, summed over the CPUs.
func (k *KernelFilter) Dropped() (uint64, error) {
	var perCPU []uint64
	if err := k.Drops.Lookup(uint32(0), &perCPU); err != nil {
		return 0, fmt.Errorf("reading the kernel filter's counter: %w", err)
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	return n, nil
}

// Close unloads the filter; sockets it is attached to keep their copy.
func (k *KernelFilter) Close() error {
	return errors.Join(k.Program.Close(), k.Drops.Close())
}
