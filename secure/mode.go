package secure

// Secure reports whether the policy checks frames at all (false with -U),
// so the engine can skip the checker calls entirely for a pure bridge.
func (p *Policy) Secure() bool { return p.secure }
