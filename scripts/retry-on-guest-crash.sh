#!/bin/sh
# Runs a go test command (the QEMU stream migration tests, make test-migration) and runs
# it again, up to 3 times in all, only when it failed and a guest's kernel
# crashed: under QEMU 7.2 with TCG a Linux guest's kernel sometimes crashes
# after a migration whatever its network does (integration/qemu/
# migrate_test.go says how it was found). These tests' guests use
# -netdev stream, where the switch never touches guest memory, so such a
# crash is QEMU's and says nothing about vknetd. Any other failure fails
# at once; every attempt's output is printed.
#
#   scripts/retry-on-guest-crash.sh go test -run ... ./integration/qemu/
set -u
crash='Kernel panic - not syncing|BUG: unable to handle|BUG: soft lockup|general protection fault|list_add corruption|Oops:'
out=$(mktemp /tmp/vknetd-retry.XXXXXX)
trap 'rm -f "$out"' EXIT
attempt=1
while :; do
	"$@" >"$out" 2>&1
	rc=$?
	cat "$out"
	[ "$rc" -eq 0 ] && exit 0
	if ! grep -Eq "$crash" "$out"; then
		exit "$rc"
	fi
	if [ "$attempt" -ge 3 ]; then
		echo "retry-on-guest-crash: a guest's kernel crashed in each of $attempt attempts; failing" >&2
		exit "$rc"
	fi
	echo "retry-on-guest-crash: attempt $attempt failed and a guest's kernel crashed (QEMU under TCG, see integration/qemu/migrate_test.go); running it again" >&2
	attempt=$((attempt + 1))
done
