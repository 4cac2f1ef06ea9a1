// Package integration drives the real vknetd binary from outside, as a user
// would: it builds cmd/vknetd once, starts daemons inside network namespaces
// it creates, and checks what clients (socat, raw SEQPACKET sockets, vknetd -c)
// see, what the daemon logs and what it leaves behind.
//
// The tests are Linux-only, need root and network namespaces, and skip
// with a message otherwise. Everything they configure lives in namespaces
// that internal/testbed creates (vkt-<pid>-<n>), on addresses in
// 198.18.0.0/15, and is removed by t.Cleanup even when a test fails, after
// every process inside is stopped; sockets and pidfiles go to temporary
// directories, never /var/run.
package integration
