#!/usr/bin/env bash
# Docker Compose v2 for the tests that ask the real tool (`docker compose config`,
# `docker compose ps`). Debian 12 packages only the old Python docker-compose 1.29
# and no registry here serves the plugin binary, so it is built once from the Go
# module proxy (~3 minutes on 2 cores) into the CLI's plugin folder.
set -euo pipefail

VERSION=v2.29.7
PLUGINS=/usr/local/lib/docker/cli-plugins

if docker compose version >/dev/null 2>&1; then
  echo "install-compose: $(docker compose version)"
  exit 0
fi
export PATH="$PATH:/usr/local/go/bin"  # where this kind of machine keeps Go, if PATH lacks it
command -v go >/dev/null || { echo "install-compose: go is missing" >&2; exit 1; }
start=$SECONDS
build=$(mktemp -d)
GOBIN="$build" GOFLAGS=-mod=mod go install "github.com/docker/compose/v2/cmd@$VERSION"
mkdir -p "$PLUGINS"
install -m 0755 "$build/cmd" "$PLUGINS/docker-compose"
rm -rf "$build"
echo "install-compose: built docker compose $VERSION in $((SECONDS - start))s"
