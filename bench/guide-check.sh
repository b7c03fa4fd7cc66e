#!/usr/bin/env bash
# The obvious alternative to klutch-health: the Klutch monitoring guide's five manual checks, scripted.
# Usage: KUBECONFIG=... guide-check.sh BACKEND_HEALTH_URL   (exit 0 when everything looks healthy)
set -uo pipefail
url=$1
ok=0
kubectl get providers -o jsonpath='{range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Healthy")].status}{"\n"}{end}' \
  | grep -q ' False' && ok=1
kubectl get pods -n crossplane-system -l pkg.crossplane.io/provider=provider-anynines \
  -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -q False && ok=1
kubectl get providerconfigs.dataservices.anynines.com -o jsonpath='{range .items[*]}{.status.health.lastStatus}{"\n"}{end}' \
  | grep -q false && ok=1
curl -sf "$url" | grep -q degraded && ok=1
kubectl get deployment -n bind anynines-backend -o jsonpath='{.status.conditions[?(@.type=="Available")].status}' \
  | grep -q True || ok=1
exit $ok
