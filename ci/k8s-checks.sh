#!/usr/bin/env bash
# Offline checks of the Kubernetes artefacts, called by .ci/run before
# `cargo test`: kubernetes-validate --strict on every manifest `purposegate
# inject` produces and on the hand-rendered chart example, values.yaml against
# values.schema.json, the dashboard and the rendered example against the
# templates (ci/check_k8s.py), promtool on the alert rules, and helm
# lint/template when a helm binary exists.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

out=target/k8s
venv=target/k8s-venv
mkdir -p "$out"

# kubernetes-validate bundles the Kubernetes schemas: no network at check time.
# A venv under target/ sidesteps PEP 668 ("externally managed") system Pythons;
# without the venv module, fall back to a user install.
have_tools() { "$1" -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null; }
py="$venv/bin/python"
if ! have_tools "$py"; then
  if python3 -m venv "$venv" 2>/dev/null; then
    "$venv/bin/pip" install --quiet kubernetes-validate jsonschema
  else
    py=python3
    have_tools "$py" || python3 -m pip install --quiet --user kubernetes-validate jsonschema \
      || python3 -m pip install --quiet --user --break-system-packages kubernetes-validate jsonschema
  fi
fi
kv() { "$py" -m kubernetes_validate --strict --quiet "$@"; }

# Build first with its output visible: a build failure must not hide in the
# inject logs below. Any failing step prints those logs before exiting.
cargo build --locked --quiet --bin purposegate
bin="${CARGO_TARGET_DIR:-target}/debug/purposegate"
pg() { "$bin" "$@"; }
trap 'rc=$?; echo "ci/k8s-checks.sh failed (exit $rc) at line $LINENO" >&2; for f in "$out"/*.log; do [ -s "$f" ] && { echo "--- $f" >&2; cat "$f" >&2; }; done; exit $rc' ERR
input=examples/k8s/store-deployment.yaml
pg inject --all "$input" >"$out/injected.yaml" 2>"$out/inject.log"
# With the chart's ConfigMap in the input, the ports asked for are written
# into its config.yaml; the audit claim goes to the one-replica StatefulSet.
{ cat examples/k8s/rendered/configmap.yaml; echo ---; cat "$input"; } |
  pg inject --workload file-store --tls-secret purposegate-tls --audit-claim audit-log \
    --proxy-port 8444 --admin-port 9101 >"$out/injected-tls.yaml" 2>>"$out/inject.log"
grep -q 'listen: "0.0.0.0:8444"' "$out/injected-tls.yaml"
grep -q 'admin_listen: "0.0.0.0:9101"' "$out/injected-tls.yaml"
pg inject --all --no-jwt-secret "$out/injected-tls.yaml" >"$out/reinjected.yaml" 2>>"$out/inject.log"
# One claim for a Deployment's 2 replicas is refused.
if pg inject --workload content-store --audit-claim audit-log "$input" >/dev/null 2>"$out/refused.log"; then
  echo "FAIL: inject gave one PersistentVolumeClaim to 2 replicas" >&2
  exit 1
fi
grep -q "volumeClaimTemplates" "$out/refused.log"
# Idempotent: injecting the injected output again changes nothing.
pg inject --all "$out/injected.yaml" 2>/dev/null | cmp - "$out/injected.yaml"

echo "kubernetes-validate --strict: inject output and rendered chart example"
kv "$input" "$out/injected.yaml" "$out/injected-tls.yaml" "$out/reinjected.yaml"
kv examples/k8s/rendered/*.yaml examples/k8s/rendered/monitoring/*.yaml

"$py" ci/check_k8s.py "$out/injected.yaml" "$out/prometheusrule-spec.yaml"

if command -v promtool >/dev/null 2>&1; then
  promtool check rules helm/purposegate/rules/alerts.yaml "$out/prometheusrule-spec.yaml"
  promtool test rules helm/purposegate/rules/alerts_test.yaml
else
  echo "warning: promtool not installed; alert rules not checked"
fi

if command -v helm >/dev/null 2>&1; then
  example=example.enabled=true,example.store.image=registry.example.test/content-store:1.0.0,image.repository=ghcr.io/purposegate/purposegate
  helm lint --strict helm/purposegate
  helm lint --strict helm/purposegate --set "$example"
  helm template purposegate helm/purposegate --set "$example" >"$out/helm-template-example.yaml"
  helm template purposegate helm/purposegate >"$out/helm-template.yaml"
  helm template purposegate helm/purposegate \
    --set serviceMonitor.enabled=true,prometheusRule.enabled=true,tls.enabled=true >"$out/helm-template-all.yaml"
  kv "$out/helm-template.yaml" "$out/helm-template-example.yaml" "$out/helm-template-all.yaml"
else
  echo "helm not installed: helm lint/template skipped (examples/k8s/rendered stands in)"
fi
