#!/usr/bin/env bash
# Offline checks of the deployment files (no Docker engine or cluster needed):
# every kustomize overlay renders and validates strictly against the Kubernetes
# API schemas; docker-compose.yml validates against the Compose specification;
# the OpenAPI document the binary serves validates as OpenAPI 3.1; the
# monitoring kit (k8s/monitoring) renders, its ConfigMap validates strictly, its
# ServiceMonitor and PrometheusRule validate against the Prometheus Operator's
# CRD schemas (vendored in k8s/monitoring/schemas/) and its rules pass
# `promtool check rules`.
# Installs what it needs: kubectl (Debian's kubernetes-client), promtool
# (Debian's prometheus) and, from PyPI
# into a virtualenv under target/, kubernetes-validate, check-jsonschema and
# openapi-spec-validator. Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "error: need root (or sudo) to run: $*" >&2; exit 1
  fi
}

if ! command -v kubectl >/dev/null 2>&1; then
  say "installing kubectl (kubernetes-client) with apt-get"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi
if ! command -v promtool >/dev/null 2>&1; then
  say "installing promtool (prometheus) with apt-get"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# Pinned, in a virtualenv of their own (no root, nothing global), so the
# schemas the files are checked against do not move under us.
TOOLS=target/deploy-tools
PY_TOOLS=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0 openapi-spec-validator==0.9.0)
if [ ! -x "$TOOLS/bin/kubernetes-validate" ] || [ ! -x "$TOOLS/bin/check-jsonschema" ] ||
  [ ! -x "$TOOLS/bin/openapi-spec-validator" ]; then
  say "installing ${PY_TOOLS[*]} from PyPI into $TOOLS"
  rm -rf "$TOOLS"
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check "${PY_TOOLS[@]}"
fi
PATH="$PWD/$TOOLS/bin:$PATH"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for overlay in k8s/overlays/*/; do
  name=$(basename "$overlay")
  say "k8s: kubectl kustomize $overlay | kubernetes-validate --strict"
  kubectl kustomize "$overlay" 2>"$out/$name.err" >"$out/$name.yaml" || { cat "$out/$name.err" >&2; exit 1; }
  kubernetes-validate --strict --quiet "$out/$name.yaml"
  # What the overlay must contain (a rendering that silently lost a part would
  # still validate).
  for kind in Deployment Service PodDisruptionBudget HorizontalPodAutoscaler NetworkPolicy ConfigMap Secret Ingress; do
    grep -q "^kind: $kind\$" "$out/$name.yaml" || { echo "error: $overlay renders no $kind" >&2; exit 1; }
  done
done
say "k8s: kubectl kustomize k8s/monitoring | kubernetes-validate --strict, check-jsonschema (CRD schemas), promtool check rules"
kubectl kustomize k8s/monitoring 2>"$out/monitoring.err" >"$out/monitoring.yaml" || { cat "$out/monitoring.err" >&2; exit 1; }
mkdir "$out/monitoring"
"$TOOLS/bin/python" scripts/check_monitoring.py "$out/monitoring.yaml" "$out/monitoring"
kubernetes-validate --strict --quiet "$out/monitoring/standard.yaml"
check-jsonschema --schemafile k8s/monitoring/schemas/servicemonitor.schema.json "$out/monitoring/ServiceMonitor.yaml"
check-jsonschema --schemafile k8s/monitoring/schemas/prometheusrule.schema.json "$out/monitoring/PrometheusRule.yaml"
promtool check rules "$out/monitoring/rules.yaml"
say "compose: check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml"
check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
say "openapi: cooplocker openapi | openapi-spec-validator"
cargo run --quiet --bin cooplocker -- openapi >"$out/openapi.json"
openapi-spec-validator "$out/openapi.json"
