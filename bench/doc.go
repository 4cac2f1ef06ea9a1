// Package bench measures the switch over real sockets: an in-process
// engine with its listener in a temporary directory, driven by a batched
// load generator (sendmmsg/recvmmsg), because socat-style clients burn
// more CPU than the switch and would measure themselves.
//
// The load generator uses recvmmsg/sendmmsg and is Linux-only.
package bench
