//go:build vknetd_rollback_test

package main

import (
	"net/netip"

	"github.com/vknetd/vknetd/engine"
	"github.com/vknetd/vknetd/secure"
	"github.com/vknetd/vknetd/tap"
)

// Never in a release: integration/secure builds vknetd with this tag to
// have a binary whose kernel filter has other rules (see
// otherRulesThenFail): they take all of 10.0.0.0/8 for the switch's
// network, so a frame from 10.6.6.6, which the running daemon's filter
// drops, passes this one.
func init() {
	otherRulesThenFail = func(o *options, t *tap.Device) (*secure.Policy, error) {
		return secure.New(secure.Config{
			Secure:      true,
			Network:     netip.MustParsePrefix("10.0.0.1/8"),
			TapMAC:      t.HostMAC(),
			BindingAge:  o.macAge,
			MaxBindings: o.macMax,
			MaxPorts:    engine.MaxPorts(o.maxClients),
		})
	}
}
