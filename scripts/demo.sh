#!/bin/bash
# The demo: vknetd in its own network namespace with 198.18.0.1/16 on its
# TAP, two vknetplug clients (each a "VM" in its own namespace with a TAP of
# its own: one over the SEQPACKET socket, one as a vhost-user guest), pings
# client to client and client to host, then the daemon's counters.
# Everything it creates is removed on exit, even on failure.
set -euo pipefail

VKNETD=${1:-bin/vknetd}
VKNETD=$(realpath "$VKNETD")
VKNETPLUG=$(dirname "$VKNETD")/vknetplug
[ -x "$VKNETPLUG" ] || { echo "demo: $VKNETPLUG is missing: run make build" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it creates network namespaces)" >&2; exit 1; }
for t in ip ping; do
	command -v $t >/dev/null || { echo "demo: $t is missing: run scripts/install-deps.sh" >&2; exit 1; }
done

id=$$
SW=vkt-demo-$id-switch A=vkt-demo-$id-a B=vkt-demo-$id-b
DIR=$(mktemp -d /tmp/vknetd-demo.XXXXXX)
SOCK=$DIR/vknet
VHOST=$DIR/vknet.vhost
pids=()

cleanup() {
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	[ -n "${DAEMON:-}" ] && kill -TERM "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
	for ns in $SW $A $B; do ip netns del "$ns" 2>/dev/null; done
	rm -rf "$DIR"
}
trap cleanup EXIT

for ns in $SW $A $B; do ip netns add "$ns"; ip -n "$ns" link set lo up; done

# The demo uses root's group for the socket so it changes nothing on the
# host; a real installation creates the vknet group (see README).
echo "== starting vknetd in namespace $SW"
ip netns exec $SW "$VKNETD" -d -p "$SOCK" --vhost-user "$VHOST" -i "$DIR/vknetd.pid" -t vkdemo0 --group root 198.18.0.1/16 \
	>"$DIR/tapname" 2>"$DIR/vknetd.log" &
DAEMON=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || { echo "demo: vknetd did not start:"; cat "$DIR/vknetd.log"; exit 1; }
echo "   TAP $(cat "$DIR/tapname") carries 198.18.0.1/16; sockets $SOCK (SEQPACKET), $VHOST (vhost-user)"

client() { # namespace address flag socket
	ip netns exec "$1" "$VKNETPLUG" -v -t vm0 "$3" "$4" "$2"/16 >"$DIR/plug-$1.out" 2>"$DIR/plug-$1.log" &
	pids+=($!)
	# vknetplug prints its TAP's name once frames flow.
	for _ in $(seq 100); do grep -qx vm0 "$DIR/plug-$1.out" 2>/dev/null && return; sleep 0.05; done
	echo "demo: vknetplug in $1 did not come up"; cat "$DIR/plug-$1.log"; exit 1
}
echo "== plugging two namespaces in with vknetplug: 198.18.0.2 (SEQPACKET), 198.18.0.3 (vhost-user)"
client $A 198.18.0.2 -p "$SOCK"
client $B 198.18.0.3 --vhost-user "$VHOST"

fail=0
ping_from() { # namespace target label
	if out=$(ip netns exec "$1" ping -c 3 -i 0.2 -W 2 "$2" 2>&1); then
		echo "   $3: $(echo "$out" | grep -E 'packets transmitted|rtt' | tr '\n' ' ')"
	else
		echo "   $3: FAILED"; echo "$out"; fail=1
	fi
}
echo "== pings"
ping_from $A 198.18.0.3 "client 198.18.0.2 -> client 198.18.0.3"
ping_from $B 198.18.0.2 "client 198.18.0.3 -> client 198.18.0.2"
ping_from $A 198.18.0.1 "client 198.18.0.2 -> host (TAP) 198.18.0.1"
ping_from $SW 198.18.0.3 "host (TAP) 198.18.0.1 -> client 198.18.0.3"

echo "== daemon counters (SIGUSR1)"
kill -USR1 "$DAEMON"
sleep 0.3
grep -E 'counters' "$DIR/vknetd.log" | sed 's/^/   /'
echo "   (ipv6-disabled: the clients' kernels send IPv6 solicitations, which secure mode drops without --ipv6)"
VKNETCTL=$(dirname "$VKNETD")/vknetctl
if [ -x "$VKNETCTL" ]; then
	echo "== vknetctl ports and macs (the control socket beside -p)"
	"$VKNETCTL" --socket "$SOCK.ctl" ports | sed 's/^/   /'
	"$VKNETCTL" --socket "$SOCK.ctl" macs | sed 's/^/   /'
fi
echo "== stopping the plugs (SIGTERM): each removes its TAP and exits 0"
for p in "${pids[@]}"; do
	kill -TERM "$p"
	st=0; wait "$p" || st=$?
	[ $st -eq 0 ] || { echo "   vknetplug (pid $p) exited $st"; fail=1; }
done
pids=()
for ns in $A $B; do
	sed "s/^/   $ns: /" "$DIR/plug-$ns.log"
	if ip -n "$ns" link show vm0 >/dev/null 2>&1; then echo "   vm0 still exists in $ns"; fail=1; fi
done
if [ $fail -ne 0 ]; then
	echo "== demo FAILED; daemon log:"; cat "$DIR/vknetd.log"; exit 1
fi
echo "== demo passed; removing namespaces, daemon and socket"
