#!/usr/bin/env bash
# Runs weft's load benchmarks (go test -bench ./bench) and the same
# scenarios against Hocuspocus, one after the other on this machine, and
# prints a markdown comparison table. Raw outputs stay in $OUT.
#
#   bench/peers/run.sh                 # defaults: a few minutes each
#   BENCHFLAGS=-bench.large bench/peers/run.sh
#
# Yorkie: bench/peers/yorkie (its own Go module) is built and run after
# Hocuspocus; if it fails to build or run, run.sh says why and goes on.
#   YORKIE=0 skips it; YORKIE_JOIN=final writes only the end text of
#   automerge-paper for the join instead of its whole history, which takes
#   Yorkie's SDK 4–7 minutes here; YORKIE_CLIENTS=10,100 are the
#   fan-out client counts.
set -euo pipefail
cd "$(dirname "$0")"
peers=$PWD
export GOTOOLCHAIN=local
OUT=${OUT:-$(mktemp -d -t weft-peers-XXXXXX)}
mkdir -p "$OUT"
echo "outputs in $OUT" >&2

{
	echo "nproc: $(nproc)"
	free -h | sed -n 2p
	go version
	echo "node $(node --version)"
	grep -m1 'model name' /proc/cpuinfo || true
} | tee "$OUT/machine.txt" >&2

echo "== weft" >&2
(cd ../.. && go test -run '^$' -bench . -benchtime 1x -timeout 60m ./bench -args ${BENCHFLAGS:-}) | tee "$OUT/weft.txt" >&2

echo "== hocuspocus" >&2
cd "$peers/hocuspocus"
[ -d node_modules ] || npm ci --no-audit --no-fund >&2
node run.mjs | tee "$OUT/hocuspocus.jsonl" >&2

echo "== yorkie" >&2
: >"$OUT/yorkie.jsonl"
if [ "${YORKIE:-1}" = 0 ]; then
	echo "yorkie: skipped (YORKIE=0)" >&2
elif ! "$peers/yorkie/build.sh" >"$OUT/yorkie-build.log" 2>&1; then
	echo "yorkie: build failed, so no Yorkie figures; the end of $OUT/yorkie-build.log:" >&2
	tail -n 15 "$OUT/yorkie-build.log" >&2
else
	tail -n 1 "$OUT/yorkie-build.log" >&2
	timeout 45m "$peers/yorkie/bin/yorkie-load" -clients "${YORKIE_CLIENTS:-10,100}" -join-mode "${YORKIE_JOIN:-history}" \
		-deadline 20m ${TRACES:+-traces "$TRACES"} fanout memory join 2> >(tee "$OUT/yorkie.log" >&2) |
		tee "$OUT/yorkie.jsonl" >&2 ||
		{ echo "yorkie: the load client failed (exit $?); the end of $OUT/yorkie.log:" >&2; tail -n 15 "$OUT/yorkie.log" >&2; }
	grep -h '"error"' "$OUT/yorkie.jsonl" >&2 || true
fi

echo >&2
node "$peers/table.mjs" "$OUT/weft.txt" "$OUT/hocuspocus.jsonl" | tee "$OUT/table.md"
echo
node "$peers/yorkie/table.mjs" "$OUT/weft.txt" "$OUT/hocuspocus.jsonl" "$OUT/yorkie.jsonl" | tee "$OUT/table-yorkie.md" ||
	echo "yorkie: could not print its table" >&2
