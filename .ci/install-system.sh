#!/usr/bin/env bash
# Install the Debian packages the real-thing tests need (DESIGN.md "Tests
# against real things"). Idempotent: if every package is already installed we
# touch neither apt lists nor dpkg, so re-runs take well under a second.
set -euo pipefail

PKGS=(
  docker.io       # dockerd + containerd + runc + docker-proxy. The newer
                  # /usr/local/bin/docker client (if any) stays first on PATH;
                  # it negotiates down to the daemon's API 1.41 and works.
  prometheus      # only for promtool; the server must never be started
  debootstrap     # builds the systemd-as-PID-1 test image rootfs
  busybox-static  # static /bin/busybox for the hxpc-test/busybox image
  systemd         # systemd-analyze verify / security --offline=true
  openssh-client  # ssh transport
  iproute2
  git
  curl wget       # the health-check probes' http branches are tested with each tool
)

missing=()
for p in "${PKGS[@]}"; do
  # "install ok installed" is the only state that means the package is usable.
  if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  echo "install-system: all packages present"
  exit 0
fi
echo "install-system: installing ${missing[*]}"

# PID 1 here is not systemd, and the prometheus/docker postinsts try to start
# their services via invoke-rc.d. A policy-rc.d that exits 101 makes them skip
# the start instead of launching a stray prometheus or failing the install.
# Only create (and later remove) it if the machine does not already have one.
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
start=$SECONDS
apt-get update -qq
# --no-install-recommends: docker.io would otherwise pull apparmor,
# cgroupfs-mount and needrestart; prometheus would pull node-exporter.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-system: done in $((SECONDS - start))s"
