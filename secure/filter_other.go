//go:build !linux

package secure

import "errors"

// KernelFilter is Linux's eBPF socket filter; elsewhere the userspace
// Checker judges every frame alone.
type KernelFilter struct{}

// LoadKernelFilter always fails outside Linux.
func LoadKernelFilter(p *Policy, sockets int) (*KernelFilter, error) {
	return nil, errors.New("kernel filter: eBPF socket filters need Linux")
}

// Attach is never reached: LoadKernelFilter returns no filter.
func (k *KernelFilter) Attach(fd int) (uint64, error) {
	return 0, errors.New("kernel filter: not on this system")
}

// Dropped is never reached: LoadKernelFilter returns no filter.
func (k *KernelFilter) Dropped(cookie uint64) (uint64, error) { return 0, nil }

// Forget is never reached: LoadKernelFilter returns no filter.
func (k *KernelFilter) Forget(cookie uint64) {}

// Close is never reached: LoadKernelFilter returns no filter.
func (k *KernelFilter) Close() error { return nil }

// AdoptKernelFilter always fails outside Linux: no daemon there has one
// to hand over.
func AdoptKernelFilter(p *Policy, progFd, dropsFd int) (*KernelFilter, error) {
	return nil, errors.New("kernel filter: eBPF socket filters need Linux")
}
