package engine

import "fmt"

func (e *Engine) DebugVhost() string {
	s := fmt.Sprintf("rxPending %d free %d\n", len(e.rxPending), e.pool.Free())
	for _, p := range e.live {
		if t, ok := p.t.(*vhostTransport); ok {
			s += fmt.Sprintf("  port %d more %v writeArmed %v txq %d dirty %v%s\n", p.id, t.more, p.writeArmed, p.txq.Len(), p.dirty, t.dev.DebugState())
		}
	}
	return s
}
