#!/usr/bin/env bash
# Start a Docker daemon for the tests unless one already answers.
# On this machine (cgroup v1 hybrid, kernel with overlayfs, working iptables)
# dockerd needs no special flags: overlay2 storage, cgroupfs driver, default
# bridge with iptables NAT and docker-proxy for -p 127.0.0.1:PORT:PORT all work.
# HXPC_DOCKERD_FLAGS can add flags (e.g. "--storage-driver=vfs") on machines
# where that is not true.
set -euo pipefail

LOG=${HXPC_DOCKERD_LOG:-/tmp/hxpc-dockerd.log}
TIMEOUT=${HXPC_DOCKERD_TIMEOUT:-60}

if docker info >/dev/null 2>&1; then
  echo "start-dockerd: daemon already answering"
  exit 0
fi
command -v dockerd >/dev/null || { echo "start-dockerd: dockerd missing (run .ci/install-system.sh)" >&2; exit 1; }

# setsid + </dev/null: detach from this shell so the daemon outlives the CI
# step. dockerd launches its own containerd when none is running.
# shellcheck disable=SC2086
setsid dockerd ${HXPC_DOCKERD_FLAGS:-} </dev/null >>"$LOG" 2>&1 &

for ((i = 0; i < TIMEOUT; i++)); do
  if docker info >/dev/null 2>&1; then
    echo "start-dockerd: daemon up after ${i}s (log: $LOG)"
    exit 0
  fi
  sleep 1
done
echo "start-dockerd: daemon did not answer within ${TIMEOUT}s; last log lines:" >&2
tail -n 30 "$LOG" >&2
exit 1
