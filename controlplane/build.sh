#!/usr/bin/env bash
# Builds the real control plane for the tests (tests/realcp): `controlplane` (embedded etcd, kube-apiserver)
# and `kubectl`, both from Kubernetes' own Go modules at the release go.mod pins, into a cache keyed by that
# release and a hash of go.mod, go.sum, the Go sources, this script and the Go version. A warm cache is reused
# at once. The last line on stdout is the directory holding both binaries (KLUTCH_CONTROLPLANE_BIN_DIR).
#
# Everything comes from the Go module proxy (GOPROXY); no other network. A cold build takes about 8 to 12
# minutes on 2 cores (README, "Tests against a real control plane"), so .ci/run starts it in the background.
set -euo pipefail
cd "$(dirname "$0")"

export GOTOOLCHAIN=local # the machine's Go: go.mod's `go` line is what it must satisfy, never a download
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
[ -x "$GO" ] || { echo "controlplane/build.sh: no Go toolchain (looked for go on PATH and /usr/local/go/bin/go)" >&2; exit 1; }

release=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' go.mod)
[ -n "$release" ] || { echo "controlplane/build.sh: go.mod pins no k8s.io/kubernetes release" >&2; exit 1; }
key=$( { cat go.mod go.sum build.sh ./*.go; "$GO" version; } | sha256sum | cut -c1-16)
cache=${KLUTCH_HEALTH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/klutch-health}
out="$cache/controlplane/$release-$key"

if [ -x "$out/controlplane" ] && [ -x "$out/kubectl" ]; then
  echo "controlplane/build.sh: reusing $out" >&2
  echo "$out"
  exit 0
fi

# What /version reports: the release, as Kubernetes' own hack/lib/version.sh stamps it (both the server's
# component-base and kubectl's client-go), dated by the release's own time so that builds are reproducible.
major=${release#v}; major=${major%%.*}
minor=${release#v*.}; minor=${minor%%.*}
built=$("$GO" mod download -json "k8s.io/kubernetes@$release" | sed -n 's/.*"Time": *"\([^"]*\)".*/\1/p' | head -1)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$release -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=${built:-1970-01-01T00:00:00Z}"
done

tmp="$out.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
echo "controlplane/build.sh: building kube-apiserver, etcd and kubectl $release into $out (cold: minutes)" >&2
start=$(date +%s)
"$GO" build -trimpath -ldflags "$ldflags" -o "$tmp/" . k8s.io/kubernetes/cmd/kubectl
echo "controlplane/build.sh: built in $(( $(date +%s) - start ))s" >&2
# Another build of the same key may have finished first: either result is the same.
mv -T "$tmp" "$out" 2>/dev/null || true
echo "$out"
