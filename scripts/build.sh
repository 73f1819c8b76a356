#!/bin/sh
# The one build of pushd: CI runs it and so does the Dockerfile's build stage.
# Usage: scripts/build.sh [OUTPUT] (default ./pushd). VERSION sets the version.
set -eu
out=${1:-./pushd}
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${version}" -o "$out" ./cmd/pushd
