#!/usr/bin/env bash
# A real Kubernetes control plane for the server-side tests (tests/kubecluster.py):
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes
# whose pods become Ready without a kubelet). No binary release can be downloaded on
# this kind of machine and neither PyPI nor Debian packages them, so all five are
# built from the Go module proxy (cold: several minutes on 2 cores; Go's build cache
# in the default GOCACHE makes a rebuild fast) into a per-machine cache:
#
#   ${HXPC_KUBE_CACHE:-/var/cache/hxpc-test/kube-v1.37.2}/bin/{etcd,kube-apiserver,...}
#   ${HXPC_KUBE_CACHE:-...}/stage/{node-fast,node-heartbeat,pod-fast}.yaml   (kwok --config)
#
# Idempotent: when everything is in place it only says so (well under 2 s). The build
# happens in a temporary directory beside the cache and is renamed into place only when
# every step succeeded, so a killed build never leaves a half cache behind.
set -euo pipefail

KUBE_VERSION=v1.37.2     # k8s.io/kubernetes
STAGING_VERSION=v0.37.2  # its staging modules (k8s.io/api, client-go, ...) as published
ETCD_VERSION=v3.7.3      # kubernetes v1.37.2 links the etcd v3.7 client
KWOK_VERSION=v0.8.0
CACHE="${HXPC_KUBE_CACHE:-/var/cache/hxpc-test/kube-$KUBE_VERSION}"
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
STAGES=(node-fast node-heartbeat pod-fast)

complete() {
  local name
  for name in "${BINARIES[@]}"; do [[ -x "$CACHE/bin/$name" ]] || return 1; done
  for name in "${STAGES[@]}"; do [[ -s "$CACHE/stage/$name.yaml" ]] || return 1; done
}

if complete; then
  echo "install-kube: Kubernetes $KUBE_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION already in $CACHE"
  exit 0
fi

export PATH="$PATH:/usr/local/go/bin"  # where this kind of machine keeps Go, if PATH lacks it
command -v go >/dev/null || { echo "install-kube: go is missing" >&2; exit 1; }
# -mod=mod lets `go build` fill in go.sum for the generated modules. GOPATH and GOCACHE
# stay at their defaults on purpose: the module and build caches then survive between runs.
export GOFLAGS=-mod=mod
export CGO_ENABLED=0  # static binaries; nothing here needs cgo

start=$SECONDS
mkdir -p "$(dirname "$CACHE")"
# Beside the cache, on the same filesystem, so the final `mv` is one atomic rename.
work=$(mktemp -d "$(dirname "$CACHE")/.build-kube.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Long steps run as background jobs awaited at once, so that a TERM/INT (a CI timeout, ^C)
# reaches this trap immediately and ends the go command too, instead of orphaning a build
# that keeps writing into the removed temp directory.
trap 'kill $(jobs -p) 2>/dev/null; exit 143' TERM INT HUP
run() { "$@" & wait $!; }
mkdir -p "$work/out/bin" "$work/out/stage" "$work/kube" "$work/etcd"

# --- kube-apiserver, kube-controller-manager, kube-scheduler -----------------------
# k8s.io/kubernetes is not meant to be a dependency: its go.mod requires every staging
# module at v0.0.0 and replaces it with ./staging/src/..., which only holds inside its own
# repository. A consumer module therefore replaces each of those with the published
# v0.37.2. The list is read from the release's own go.mod so it never drifts.
echo "install-kube: resolving k8s.io/kubernetes@$KUBE_VERSION"
kube_mod=$(go -C "$work/kube" mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
  | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[[ -s "$kube_mod" ]] || { echo "install-kube: no go.mod for k8s.io/kubernetes@$KUBE_VERSION" >&2; exit 1; }
staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\) v0\.0\.0$#\1#p' "$kube_mod")
[[ -n "$staging" ]] || { echo "install-kube: no staging modules found in $kube_mod" >&2; exit 1; }
{
  echo "module hxpc.test/kube"
  echo
  echo "go 1.26"
  echo
  echo "require k8s.io/kubernetes $KUBE_VERSION"
  echo
  echo "replace ("
  for module in $staging; do echo "	$module => $module $STAGING_VERSION"; done
  echo ")"
} >"$work/kube/go.mod"

# Without these the servers report v0.0.0-master, which kubectl and the Python client
# treat as an ancient server (version skew warnings, discovery quirks).
minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
echo "install-kube: building kube-apiserver, kube-controller-manager, kube-scheduler $KUBE_VERSION"
run go -C "$work/kube" build -ldflags "$ldflags" -o "$work/out/bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler

# --- etcd ----------------------------------------------------------------------------
# go.etcd.io/etcd/v3 (the module with etcd's own main) carries replace directives, so
# `go install ...@version` refuses it; a small main over the embed package does the job.
# Its own module keeps etcd's dependency graph apart from Kubernetes'.
echo "install-kube: building etcd $ETCD_VERSION"
cat >"$work/etcd/go.mod" <<EOF
module hxpc.test/etcd

go 1.26

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
cat >"$work/etcd/main.go" <<'EOF'
// A single-member etcd for tests: data dir and URLs from flags, serves until killed.
package main

import (
	"flag"
	"log"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	dataDir := flag.String("data-dir", "", "data directory")
	client := flag.String("listen-client-urls", "http://127.0.0.1:2379", "client URL")
	peer := flag.String("listen-peer-urls", "http://127.0.0.1:2380", "peer URL")
	flag.Parse()
	cu, err := url.Parse(*client)
	if err != nil {
		log.Fatal(err)
	}
	pu, err := url.Parse(*peer)
	if err != nil {
		log.Fatal(err)
	}
	cfg := embed.NewConfig()
	cfg.Dir = *dataDir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.LogLevel = "warn"
	cfg.UnsafeNoFsync = true // throwaway test data: durability only costs time
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
		log.Printf("etcd ready on %s", cu)
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		log.Fatal("etcd took too long to start")
	}
	log.Fatal(<-e.Err())
}
EOF
run go -C "$work/etcd" mod tidy
run go -C "$work/etcd" build -ldflags "-s -w" -o "$work/out/bin/etcd" .

# --- kwok ----------------------------------------------------------------------------
# The stages make fake nodes Ready (and keep their heartbeat) and pods Running/Ready
# quickly; they ship in kwok's module, not in its binary.
echo "install-kube: building kwok $KWOK_VERSION"
GOBIN="$work/out/bin" run go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
kwok_dir=$(go -C "$work/kube" mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
for stage in node/fast node/heartbeat pod/fast; do
  # Concatenate every Stage document of the kustomize folder (kustomization.yaml aside).
  out="$work/out/stage/${stage/\//-}.yaml"
  for file in "$kwok_dir/kustomize/stage/$stage"/*.yaml; do
    [[ "$(basename "$file")" == kustomization.yaml ]] && continue
    { echo "---"; cat "$file"; } >>"$out"
  done
  [[ -s "$out" ]] || { echo "install-kube: no stage files in $kwok_dir/kustomize/stage/$stage" >&2; exit 1; }
done

cat >"$work/out/VERSIONS" <<EOF
kubernetes $KUBE_VERSION (staging $STAGING_VERSION)
etcd $ETCD_VERSION
kwok $KWOK_VERSION
go $(go env GOVERSION)
EOF
if complete; then  # a concurrent run finished first: keep its cache, drop this build
  echo "install-kube: $CACHE was completed meanwhile by another run"
  exit 0
fi
rm -rf "$CACHE"  # an incomplete cache left by hand (complete ones exited above)
mv -T "$work/out" "$CACHE"  # -T: fail rather than nest should another run win the race here
echo "install-kube: built ${BINARIES[*]} into $CACHE/bin in $((SECONDS - start))s"
