#!/usr/bin/env bash
# Builds the Yorkie server (memory database by default) into ./bin from the
# Go module proxy, inside this separate module so that weft's go.mod is not
# touched. v0.7.x is refused by the proxy here (see README.md).
set -euo pipefail
cd "$(dirname "$0")"
export GOTOOLCHAIN=local
go build -o bin/yorkie github.com/yorkie-team/yorkie/cmd/yorkie
./bin/yorkie version
