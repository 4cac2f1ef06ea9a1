package engine

import (
	"fmt"

	"github.com/vknetd/vknetd/internal/handover"
)

// exportOther writes the state of a port of a transport the shared code
// does not know (vhost-user on Linux), or says why it cannot be handed over.
func (e *Engine) exportOther(p *port, hp *handover.Port, addFd func(int) int) error {
	return fmt.Errorf("port %d (%s %s) cannot be handed over yet: disconnect it first", p.id, p.caps.kind, p.name)
}

// adoptOther is exportOther backwards.
func (e *Engine) adoptOther(hp *handover.Port, fd int) (transport, error) {
	return nil, fmt.Errorf("a %s port cannot be adopted", hp.Kind)
}
