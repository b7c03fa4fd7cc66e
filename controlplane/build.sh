#!/usr/bin/env bash
# Builds one Go module of this repository's test and bench infrastructure from the Go module proxy, into a
# cache keyed by the release the module pins and a hash of its go.mod, go.sum, Go sources, this script and
# the Go version. A warm cache is reused at once. The last line on stdout is the directory holding the
# binaries.
#
#   controlplane/build.sh              the real control plane for the tests (tests/realcp): `controlplane`
#                                      (embedded etcd, kube-apiserver, kube-controller-manager, kube-scheduler),
#                                      `kubectl` and `kwok`, from Kubernetes' own Go modules at the release
#                                      go.mod pins (KLUTCH_CONTROLPLANE_BIN_DIR)
#   controlplane/build.sh bench/ksm    kube-state-metrics, for bench/run's scale section only
#
# A module's release is its first one-line `require`; what is built is its own package (when it has Go files)
# and each of its `tool`s. Everything comes from the Go module proxy (GOPROXY); no other network. A cold
# build of the control plane takes many minutes on 2 cores (docs/developers/real-control-plane.md), so
# .ci/run starts it in the background; kube-state-metrics takes less.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
module=$(cd "${1:-$here}" && pwd)
name=$(basename "$module")
cd "$module"

export GOTOOLCHAIN=local # the machine's Go: go.mod's `go` line is what it must satisfy, never a download
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
[ -x "$GO" ] || { echo "build.sh: no Go toolchain (looked for go on PATH and /usr/local/go/bin/go)" >&2; exit 1; }

read -r pinned release < <(awk '$1 == "require" && $2 != "(" { print $2, $3; exit }' go.mod) || true
[ -n "${release:-}" ] || { echo "build.sh: $module/go.mod pins no release (a one-line require)" >&2; exit 1; }
shopt -s nullglob
sources=(./*.go)
key=$( { cat go.mod go.sum "$here/build.sh" "${sources[@]}"; "$GO" version; } | sha256sum | cut -c1-16)
cache=${KLUTCH_HEALTH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/klutch-health}
out="$cache/$name/$release-$key"

if [ -d "$out" ]; then
  echo "build.sh: reusing $out" >&2
  echo "$out"
  exit 0
fi

packages=()
[ ${#sources[@]} -gt 0 ] && packages+=(.)
while read -r tool; do packages+=("$tool"); done < <(awk '$1 == "tool" && NF == 2 { print $2 }' go.mod)

ldflags="-s -w"
case $pinned in
  k8s.io/kubernetes)
    # What /version reports: the release, as Kubernetes' own hack/lib/version.sh stamps it (both the server's
    # component-base and kubectl's client-go), dated by the release's own time so that builds are reproducible.
    major=${release#v}; major=${major%%.*}
    minor=${release#v*.}; minor=${minor%%.*}
    built=$("$GO" mod download -json "$pinned@$release" | sed -n 's/.*"Time": *"\([^"]*\)".*/\1/p' | head -1)
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags+=" -X $pkg.gitVersion=$release -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
      ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=${built:-1970-01-01T00:00:00Z}"
    done
    ;;
  k8s.io/kube-state-metrics/v2)
    # What `kube-state-metrics --version` and its build_info metric say, as its Makefile stamps it.
    ldflags+=" -X github.com/prometheus/common/version.Version=${release#v}"
    ;;
esac

tmp="$out.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
echo "build.sh: building ${packages[*]} ($pinned $release) into $out (cold: minutes)" >&2
start=$(date +%s)
"$GO" build -trimpath -ldflags "$ldflags" -o "$tmp/" "${packages[@]}"
echo "build.sh: built in $(( $(date +%s) - start ))s" >&2
# Another build of the same key may have finished first: either result is the same.
mv -T "$tmp" "$out" 2>/dev/null || true
echo "$out"
