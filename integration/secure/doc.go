// Package secure tests vknetd's secure mode from outside, with the real
// binary and real tools: an attacker client sends a battery of spoofed and
// malformed frames (built with gopacket, independently of the daemon's own
// decoder) while a raw capture on the daemon's TAP and on other clients
// proves none arrives; a client without an address leases one from dnsmasq
// through the switch; one client claiming another's address fails until the
// owner disconnects.
//
// Everything runs in network namespaces the tests create (testbed.NewNetns),
// on 198.18.0.0/15, removed at cleanup. The tests need root and skip with a
// message otherwise. Spoofed sources "outside the CIDR" are taken from
// 198.19.0.0/16: outside the daemon's 198.18.0.0/16, still inside the
// benchmarking range, so even a leaked frame names no real network.
package secure
