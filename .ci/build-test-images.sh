#!/usr/bin/env bash
# Build the two local test images (nothing can be pulled from a registry here):
#   hxpc-test/busybox:1         busybox-static rootfs; default CMD serves /www
#                               on :8080 with busybox httpd (GET /health -> "ok")
#   hxpc-test/systemd:bookworm  debootstrap'd Debian with systemd as PID 1,
#                               run it with (see DESIGN.md):
#     docker run -d --cap-add SYS_ADMIN --tmpfs /run --tmpfs /run/lock \
#       -v /sys/fs/cgroup:/sys/fs/cgroup:ro hxpc-test/systemd:bookworm
# Each image is only built if missing; the debootstrap tarball is cached in
# /var/cache/hxpc-test so rebuilding the image after `docker rmi` takes seconds.
set -euo pipefail

CACHE=/var/cache/hxpc-test
mkdir -p "$CACHE"
# --numeric-owner: image ownership must come from the rootfs uids, not from
# whatever names this host's /etc/passwd maps them to.
TAR=(tar --numeric-owner -c -C)

have() { docker image inspect "$1" >/dev/null 2>&1; }

# import_as TAG STOPSIGNAL CMD_JSON [EXTRA_CHANGE...] < rootfs.tar
# `docker import` cannot set STOPSIGNAL, so the imported image gets it from a
# one-line legacy build on top (no BuildKit/buildx needed, fully local).
import_as() {
  local img=$1 sig=$2 cmd=$3 id out
  shift 3
  local changes=(-c "CMD $cmd")
  for c in "$@"; do changes+=(-c "$c"); done
  id=$(docker import "${changes[@]}" -)
  out=$(printf 'FROM %s\nSTOPSIGNAL %s\n' "$id" "$sig" |
    DOCKER_BUILDKIT=0 docker build -q -t "$img" - 2>&1) || { echo "$out" >&2; exit 1; }
}

# The apt mirror this machine already uses (the only Debian mirror reachable),
# overridable with HXPC_DEBIAN_MIRROR.
debian_mirror() {
  if [[ -n "${HXPC_DEBIAN_MIRROR:-}" ]]; then echo "$HXPC_DEBIAN_MIRROR"; return; fi
  local m
  m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
      grep -v '^[[:space:]]*#' | grep -oE '(https?|file)://[^ ]*/debian/?( |$)' | head -n1 | tr -d ' ' || true)
  echo "${m:-http://deb.debian.org/debian}"
}

build_busybox() {
  local img=hxpc-test/busybox:1 t=$SECONDS root
  if have "$img"; then echo "images: $img present"; return; fi
  root=$(mktemp -d)
  mkdir -p "$root"/{bin,www,tmp,etc}
  # /bin/busybox comes from busybox-static, so the image needs no libc.
  cp /bin/busybox "$root/bin/busybox"
  chroot "$root" /bin/busybox --install -s /bin
  echo ok > "$root/www/health"
  printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
  chmod 1777 "$root/tmp"
  # SIGKILL: busybox httpd as PID 1 has no SIGTERM handler, so the kernel
  # drops SIGTERM and every `docker stop` would wait its full 10s timeout.
  "${TAR[@]}" "$root" . | import_as "$img" SIGKILL \
    '["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]' 'EXPOSE 8080'
  rm -rf "$root"
  echo "images: built $img in $((SECONDS - t))s"
}

build_systemd() {
  local img=hxpc-test/systemd:bookworm t=$SECONDS tarball=$CACHE/systemd-bookworm.tar root
  if have "$img"; then echo "images: $img present"; return; fi
  if [[ ! -s "$tarball" ]]; then
    # /var/tmp, not /tmp: the rootfs is ~260 MB and /tmp may be a small tmpfs.
    root=$(mktemp -d /var/tmp/hxpc-rootfs.XXXXXX)
    # openssh-server lets tests exercise the ssh transport against the same
    # container; busybox gives a tiny httpd/wget for health-check units.
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,busybox,openssh-server \
      bookworm "$root" "$(debian_mirror)" >"$CACHE/debootstrap.log" 2>&1 ||
      { tail -n 30 "$CACHE/debootstrap.log" >&2; rm -rf "$root"; exit 1; }
    # Empty machine-id: each container's systemd then generates its own.
    : > "$root/etc/machine-id"
    "${TAR[@]}" "$root" . > "$tarball.partial"
    mv "$tarball.partial" "$tarball"
    rm -rf "$root"
    echo "images: debootstrap + tarball in $((SECONDS - t))s"
  fi
  # systemd only shuts down on SIGRTMIN+3 (on SIGTERM it re-executes itself,
  # so `docker stop` would wait 10s and SIGKILL).
  import_as "$img" SIGRTMIN+3 '["/sbin/init"]' < "$tarball"
  echo "images: built $img in $((SECONDS - t))s"
}

build_busybox
build_systemd
