#!/usr/bin/env bash
# Runs weft's load benchmarks (go test -bench ./bench) and the same
# scenarios against Hocuspocus, one after the other on this machine, and
# prints a markdown comparison table. Raw outputs stay in $OUT.
#
#   bench/peers/run.sh                 # defaults: a few minutes each
#   BENCHFLAGS=-bench.large bench/peers/run.sh
#
# Yorkie: see bench/peers/yorkie/README.md (server built, no load client yet).
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

echo >&2
node "$peers/table.mjs" "$OUT/weft.txt" "$OUT/hocuspocus.jsonl" | tee "$OUT/table.md"
