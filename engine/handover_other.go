//go:build !linux

package engine

import (
	"fmt"

	"github.com/vknetd/vknetd/internal/handover"
)

func (l *loop) adoptOther(hp *handover.Port, fd int, claim func(int) (int, error)) (transport, func(*port) error, error) {
	return nil, nil, fmt.Errorf("a %s port cannot be adopted on this system", hp.Kind)
}

func heldVhost(*handover.Port) bool { return false }
