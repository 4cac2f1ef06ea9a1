//go:build !linux

package secure

import "errors"

// KernelFilter is Linux's eBPF socket filter; elsewhere the userspace
// Checker judges every frame alone.
type KernelFilter struct{}

// LoadKernelFilter always fails outside Linux.
func LoadKernelFilter(p *Policy, mtu int) (*KernelFilter, error) {
	return nil, errors.New("kernel filter: eBPF socket filters need Linux")
}

// Attach is never reached: LoadKernelFilter returns no filter.
func (k *KernelFilter) Attach(fd int) error { return errors.New("kernel filter: not on this system") }

// Dropped is never reached: LoadKernelFilter returns no filter.
func (k *KernelFilter) Dropped() (uint64, error) { return 0, nil }

// Close is never reached: LoadKernelFilter returns no filter.
func (k *KernelFilter) Close() error { return nil }
