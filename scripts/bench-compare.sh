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
# The benchmarks are those of PKG (default ./bench/), each run for
# BENCHTIME (default 1s), at -cpu CPU if set. BenchmarkWorkers is in the
# engine's package:
#
#   PKG=./engine/ BENCHTIME=2000000x CPU=2 ROUNDS=8 scripts/bench-compare.sh BASE Workers
#
# Each round runs the base first in odd rounds and the working tree first
# in even ones, so neither always runs on what the other left in the caches.
# With OUT set to a directory, the raw results stay there as base.txt and
# head.txt (to split BenchmarkWorkers' runs by their line-rtt-ns, say).
set -eu
base=${1:-HEAD}
pattern=${2:-'Forward|Direct'}
rounds=${ROUNDS:-6}
pkg=${PKG:-./bench/}
benchtime=${BENCHTIME:-1s}
cpu=${CPU:+-test.cpu $CPU}
benchstat="go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da"

root=$(git rev-parse --show-toplevel)
work=$(mktemp -d /tmp/vknetd-bench.XXXXXX)
trap 'git -C "$root" worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

git -C "$root" worktree add --detach "$work/base" "$base" >/dev/null
(cd "$work/base" && go test -c -o "$work/base.test" "$pkg")
(cd "$root" && go test -c -o "$work/head.test" "$pkg")

# run NAME: one round of one side's benchmarks, in the package's folder as
# go test would.
run() {
	(cd "$root/$pkg" && "$work/$1.test" -test.run '^$' -test.bench "$pattern" -test.benchtime "$benchtime" $cpu >>"$work/$1.txt")
}
i=1
while [ "$i" -le "$rounds" ]; do
	echo "round $i of $rounds" >&2
	if [ $((i % 2)) -eq 1 ]; then
		run base
		run head
	else
		run head
		run base
	fi
	i=$((i + 1))
done
if ! grep -q '^Benchmark' "$work/head.txt"; then
	echo "bench-compare: no benchmark of $pkg matches '$pattern' (BenchmarkWorkers is in PKG=./engine/)" >&2
	exit 1
fi
if [ -n "${OUT:-}" ]; then
	mkdir -p "$OUT"
	cp "$work/base.txt" "$work/head.txt" "$OUT/"
fi
$benchstat "base=$work/base.txt" "head=$work/head.txt"
