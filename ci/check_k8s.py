#!/usr/bin/env python3
"""Offline checks of the Kubernetes artefacts (run by ci/k8s-checks.sh).

- values.yaml validates against values.schema.json (JSON Schema draft-07);
- the dashboard JSON parses and queries only purposegate metrics;
- the hand-rendered chart example (examples/k8s/rendered) still says what the
  templates promise: same containers, probes, securityContext, mounts, ports,
  and the files the chart embeds (policy, consent, dashboard, alert rules);
- the chart's sidecar is the one `purposegate inject` adds.

Usage: check_k8s.py INJECTED_YAML
"""
import hashlib
import json
import pathlib
import sys

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "purposegate"
RENDERED = ROOT / "examples" / "k8s" / "rendered"
failures = []


def check(ok, message):
    if not ok:
        failures.append(message)


def load_all(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind(docs, kind):
    found = [d for d in docs if d.get("kind") == kind]
    check(len(found) >= 1, f"no {kind} found")
    return found


def values_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(values))
    for e in errors:
        check(False, f"values.yaml: {'/'.join(map(str, e.path))}: {e.message}")
    # Nothing runs by default: the example is opt-in, with an image to name.
    check(values["example"]["enabled"] is False, "values.yaml enables the example by default")
    check(values["example"]["store"]["image"] == "", "values.yaml names a default store image")
    check(values["image"]["repository"] == "", "values.yaml names an image nobody publishes")
    example = json.loads(json.dumps(values))
    example["example"]["enabled"] = True
    check(
        any(True for _ in jsonschema.Draft7Validator(schema).iter_errors(example)),
        "values.schema.json accepts example.enabled without example.store.image",
    )
    # The schema must refuse a sidecar with a writable root filesystem.
    values["securityContext"]["readOnlyRootFilesystem"] = False
    check(
        any(True for _ in jsonschema.Draft7Validator(schema).iter_errors(values)),
        "values.schema.json accepts readOnlyRootFilesystem: false",
    )


def dashboard():
    dash = json.loads((CHART / "dashboards" / "purposegate.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    check(len(exprs) >= 10, "dashboard has fewer than 10 queries")
    check(all("purposegate_" in e for e in exprs), "a dashboard query names no purposegate metric")
    check(dash.get("uid") == "purposegate", "dashboard uid is not purposegate")


PROMISES = {
    "deployment.yaml": [
        "name: store",
        "- name: purposegate",
        "path: /healthz",
        "path: /readyz",
        "port: pg-admin",
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
        "allowPrivilegeEscalation: false",
        "type: RuntimeDefault",
        "automountServiceAccountToken: false",
        "checksum/config:",
        "mountPath: /etc/purposegate",
        "mountPath: /var/lib/purposegate/audit",
        "mountPath: /var/run/secrets/purposegate/jwt",
        "path: policies/policy.yaml",
        "path: policies/consent.yaml",
        "name: pg-proxy",
        "containerPort:",
    ],
    "service.yaml": ["kind: Service", "targetPort: pg-proxy"],
    "networkpolicy.yaml": ["kind: NetworkPolicy", "- Ingress", "namespaceSelector:"],
    "configmap.yaml": ["config.yaml: |", "policy.yaml: |", "consent.yaml: |"],
    "dashboard-configmap.yaml": ["purposegate.json: |-"],
}


def promises():
    sources = "".join(p.read_text() for p in sorted((CHART / "templates").iterdir()))
    sources += (CHART / "values.yaml").read_text()
    for name, needles in PROMISES.items():
        rendered = (RENDERED / name).read_text()
        for n in needles:
            check(n in sources, f"templates/values no longer contain {n!r}")
            check(n in rendered, f"rendered/{name} does not contain {n!r}")


def rendered_structure(injected_path):
    deploy = by_kind(load_all(RENDERED / "deployment.yaml"), "Deployment")[0]
    pod = deploy["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["containers"]]
    check(names == ["store", "purposegate"], f"rendered containers are {names}")
    sidecar = pod["containers"][1]
    check(
        {p["name"]: p["containerPort"] for p in sidecar["ports"]} == {"pg-proxy": 8443, "pg-admin": 9100},
        "sidecar ports are not pg-proxy 8443 / pg-admin 9100",
    )
    check("ports" not in pod["containers"][0], "the store declares a port in the example")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        check(sidecar[probe]["httpGet"] == {"path": path, "port": "pg-admin"}, f"{probe} is not {path} on pg-admin")
    sc = sidecar["securityContext"]
    check(sc.get("readOnlyRootFilesystem") is True and sc.get("runAsNonRoot") is True, "sidecar securityContext")
    check(sc["capabilities"]["drop"] == ["ALL"] and sc["seccompProfile"]["type"] == "RuntimeDefault", "sidecar caps/seccomp")
    check("limits" in sidecar["resources"] and "requests" in sidecar["resources"], "sidecar resources")

    # The chart's sidecar is the one inject adds (same options: the defaults).
    injected = by_kind(load_all(pathlib.Path(injected_path)), "Deployment")[0]
    ipod = injected["spec"]["template"]["spec"]
    icar = [c for c in ipod["containers"] if c["name"] == "purposegate"][0]
    check(icar == sidecar, "inject's sidecar container differs from the chart's")
    ivols = [v for v in ipod["volumes"] if v["name"].startswith("purposegate-")]
    check(ivols == pod["volumes"], "inject's volumes differ from the chart's")

    svc = by_kind(load_all(RENDERED / "service.yaml"), "Service")[0]
    check([p["targetPort"] for p in svc["spec"]["ports"]] == ["pg-proxy"], "Service exposes more than the proxy port")
    check(svc["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"], "Service selector != Deployment's")

    np = by_kind(load_all(RENDERED / "networkpolicy.yaml"), "NetworkPolicy")[0]
    ports = [p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"]]
    check(sorted(ports) == [8443, 9100], f"NetworkPolicy admits ports {ports}")
    admin = [r for r in np["spec"]["ingress"] if r["ports"][0]["port"] == 9100][0]
    check("namespaceSelector" in admin["from"][0], "admin port not limited to the monitoring namespace")
    check(np["spec"]["podSelector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"], "NetworkPolicy selector")

    cm = by_kind(load_all(RENDERED / "configmap.yaml"), "ConfigMap")[0]
    check(cm["metadata"]["name"] == pod["volumes"][0]["configMap"]["name"], "ConfigMap name != volume's")
    for key, path in (("policy.yaml", "files/policy.yaml"), ("consent.yaml", "files/consent.yaml")):
        chart_file = (CHART / path).read_text()
        check(cm["data"][key] == chart_file, f"rendered ConfigMap {key} != chart {path}")
    check(
        (CHART / "files/policy.yaml").read_text() == (ROOT / "policies/policy.yaml").read_text(),
        "chart files/policy.yaml != policies/policy.yaml",
    )
    # The chart ships an empty consent registry, never the repository's sample.
    consent = yaml.safe_load((CHART / "files/consent.yaml").read_text())
    check(consent == {"users": {}, "orgs": {}}, f"chart files/consent.yaml is not an empty registry: {consent}")
    checksum = deploy["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    cm_text = (RENDERED / "configmap.yaml").read_text().split("# Source: purposegate/templates/configmap.yaml\n", 1)[1]
    check(checksum == hashlib.sha256(cm_text.encode()).hexdigest(), "checksum/config is not the rendered ConfigMap's sha256")

    dash_cm = by_kind(load_all(RENDERED / "dashboard-configmap.yaml"), "ConfigMap")[0]
    check(dash_cm["metadata"]["labels"].get("grafana_dashboard") == "1", "dashboard ConfigMap lacks grafana_dashboard: \"1\"")
    dash_file = json.loads((CHART / "dashboards" / "purposegate.json").read_text())
    check(json.loads(dash_cm["data"]["purposegate.json"]) == dash_file, "rendered dashboard != chart dashboard")


def monitoring(rules_out):
    docs = load_all(RENDERED / "monitoring" / "monitoring.yaml")
    sm = by_kind(docs, "ServiceMonitor")[0]
    metrics_svc = [d for d in docs if d["kind"] == "Service"][0]
    check(sm["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor apiVersion")
    check(
        all(metrics_svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items()),
        "ServiceMonitor does not select the metrics Service",
    )
    check(sm["spec"]["endpoints"][0]["port"] == metrics_svc["spec"]["ports"][0]["name"], "ServiceMonitor port name")
    rule = by_kind(docs, "PrometheusRule")[0]
    check(rule["apiVersion"] == "monitoring.coreos.com/v1", "PrometheusRule apiVersion")
    alerts = yaml.safe_load((CHART / "rules" / "alerts.yaml").read_text())
    check(rule["spec"] == alerts, "PrometheusRule spec != rules/alerts.yaml")
    pathlib.Path(rules_out).write_text(yaml.safe_dump(rule["spec"]))


def main():
    values_schema()
    dashboard()
    promises()
    rendered_structure(sys.argv[1])
    monitoring(sys.argv[2])
    for f in failures:
        print(f"FAIL: {f}")
    if failures:
        sys.exit(1)
    print("k8s artefacts: values schema, dashboard, rendered chart example and inject agree")


if __name__ == "__main__":
    main()
