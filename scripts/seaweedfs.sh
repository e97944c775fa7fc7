#!/usr/bin/env bash
# Builds the SeaweedFS server binary (`weed`, Apache-2.0) that the S3 store
# tests run, once, into a project-local cache: .cache/seaweedfs/bin/weed
# (ignored by git, never committed). The version is pinned; the source is the
# Go module fetched through the ordinary Go module proxy. Prints the path.
#
#   bash scripts/seaweedfs.sh                    # build if missing, print the path
#   WEED_BIN=/path/to/weed go test ./store/s3/   # the tests can use another binary
#
# `go install …/weed@VERSION` refuses this module (its go.mod has replace
# directives), so the module is downloaded and built as the main module, in
# place in the read-only module cache (go build writes only to -o and the
# build cache). About 10 minutes and 1-2 GB of build cache on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=v0.0.0-20261109003541-7506e5f91cd6
MOD=github.com/seaweedfs/seaweedfs
DIR=$PWD/.cache/seaweedfs
BIN=$DIR/bin/weed
STAMP=$DIR/bin/weed.version
if [ -x "$BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$VERSION" ]; then
	echo "$BIN"
	exit 0
fi
mkdir -p "$DIR/bin"
echo "building SeaweedFS weed@$VERSION into $BIN (once; about 10 minutes on 2 cores)" >&2
# Outside any module so GOFLAGS/go.work of this project do not apply.
export GOFLAGS=-mod=readonly GOWORK=off CGO_ENABLED=0
SRC=$(cd / && go mod download -json "$MOD@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$SRC" ] || [ ! -d "$SRC/weed" ]; then
	echo "seaweedfs.sh: cannot download $MOD@$VERSION through the Go module proxy" >&2
	exit 1
fi
(cd "$SRC" && go build -p 2 -trimpath -buildvcs=false -ldflags "-s -w" -o "$BIN.tmp" ./weed)
mv "$BIN.tmp" "$BIN"
echo "$VERSION" >"$STAMP"
echo "$BIN"
