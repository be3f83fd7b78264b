#!/usr/bin/env bash
# Builds the Yorkie server and the load client into ./bin (gitignored), in
# this separate Go module so that weft's go.mod is not touched. Yorkie comes
# from the Go module proxy at the version pinned in go.mod.
#
# Yorkie's RPC and profiling servers listen on ":PORT" (every interface).
# The server is built from a copy of the module in bin/yorkie-src whose two
# listening lines say 127.0.0.1 instead (via a generated -modfile that
# replaces the module with that copy), so that a benchmark never opens a
# port beyond loopback. The load client uses the module as it is.
set -euo pipefail
cd "$(dirname "$0")"
export GOTOOLCHAIN=local
src=$(go list -m -f '{{.Dir}}' github.com/yorkie-team/yorkie)
ver=$(go list -m -f '{{.Version}}' github.com/yorkie-team/yorkie)
[ -n "$src" ] && [ -d "$src" ] || { echo "build.sh: github.com/yorkie-team/yorkie is not downloaded (go mod download failed?)" >&2; exit 1; }
mkdir -p bin
rm -rf bin/yorkie-src
cp -r "$src" bin/yorkie-src
chmod -R u+w bin/yorkie-src
for f in server/rpc/server.go server/profiling/server.go; do
	grep -q 'fmt.Sprintf(":%d", conf.Port)' "bin/yorkie-src/$f" || { echo "build.sh: $f no longer listens on \":%d\"; check the patch" >&2; exit 1; }
	sed -i 's/fmt.Sprintf(":%d", conf.Port)/fmt.Sprintf("127.0.0.1:%d", conf.Port)/' "bin/yorkie-src/$f"
done
cp go.mod bin/server.mod
cp go.sum bin/server.sum
echo "replace github.com/yorkie-team/yorkie => $PWD/bin/yorkie-src" >>bin/server.mod
go build -modfile bin/server.mod -ldflags "-X github.com/yorkie-team/yorkie/internal/version.Version=${ver#v}" \
	-o bin/yorkie github.com/yorkie-team/yorkie/cmd/yorkie
go build -o bin/yorkie-load .
echo "built bin/yorkie (Yorkie $ver, listening on 127.0.0.1 only) and bin/yorkie-load" >&2
