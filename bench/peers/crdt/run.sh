#!/usr/bin/env bash
# Install the pinned peer CRDT libraries into this folder (npm ci, from
# package-lock.json) and replay the editing trace through each of them.
# JSON lines go to stdout, progress and timings to stderr.
#
#   bench/peers/crdt/run.sh [TRACE.json.gz] [--runs N] [--automerge-runs N] [--warmup N] [--peers yjs,loro,...]
#
# Default trace: <repo>/../shared/traces/automerge-paper.json.gz.
# SKIP_INSTALL=1 reuses an existing node_modules.
set -euo pipefail
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
command -v node >/dev/null || { echo "run.sh: node is not installed" >&2; exit 2; }
if [[ "${SKIP_INSTALL:-0}" != 1 || ! -d "$DIR/node_modules" ]]; then
  npm ci --prefix "$DIR" --no-audit --no-fund --loglevel=error >&2
fi
start=$(date +%s.%N)
status=0
node --expose-gc "$DIR/run.mjs" "$@" || status=$?
end=$(date +%s.%N)
awk -v s="$start" -v e="$end" 'BEGIN { printf "# run.sh: benchmark wall time %.1f s\n", e - s }' >&2
exit "$status"
