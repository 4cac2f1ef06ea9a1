#!/bin/sh
# Performance regression check: runs the forwarding benchmarks of a base
# revision and of the working tree alternately in one session (the machines
# are 2-core and noisy, so only side-by-side runs compare) and prints
# benchstat's comparison.
#
#   scripts/bench-compare.sh [BASE] [BENCH_REGEX]
#
# BASE defaults to HEAD (compare uncommitted work with the last commit);
# BENCH_REGEX defaults to 'Forward|Direct'. Rounds: ROUNDS (default 6).
set -eu
base=${1:-HEAD}
pattern=${2:-'Forward|Direct'}
rounds=${ROUNDS:-6}
benchstat="go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da"

root=$(git rev-parse --show-toplevel)
work=$(mktemp -d /tmp/vknetd-bench.XXXXXX)
trap 'git -C "$root" worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

git -C "$root" worktree add --detach "$work/base" "$base" >/dev/null
(cd "$work/base" && go test -c -o "$work/base.test" ./bench/)
(cd "$root" && go test -c -o "$work/head.test" ./bench/)

i=1
while [ "$i" -le "$rounds" ]; do
	echo "round $i of $rounds" >&2
	(cd "$root/bench" && "$work/base.test" -test.run '^$' -test.bench "$pattern" -test.benchtime 1s >>"$work/base.txt")
	(cd "$root/bench" && "$work/head.test" -test.run '^$' -test.bench "$pattern" -test.benchtime 1s >>"$work/head.txt")
	i=$((i + 1))
done
$benchstat "base=$work/base.txt" "head=$work/head.txt"
