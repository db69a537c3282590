#!/usr/bin/env python3
"""Splits the rendered monitoring kit (`kubectl kustomize k8s/monitoring`) for
the validators scripts/validate-deploy.sh runs, and checks what they cannot.

    check_monitoring.py RENDERED.yaml OUT_DIR

Writes OUT_DIR/standard.yaml (the kinds the Kubernetes API knows, for
kubernetes-validate --strict), OUT_DIR/<kind>.yaml per custom resource (for
check-jsonschema against k8s/monitoring/schemas/), and OUT_DIR/rules.yaml: the
PrometheusRule's spec as a plain Prometheus rule file, for promtool. Fails when
a part is missing, when the dashboard ConfigMap is not the dashboard file, or
when an alert lacks its severity, summary, description or runbook_url.
"""
import json
import pathlib
import sys

import yaml

CUSTOM = {"ServiceMonitor", "PrometheusRule"}
EXPECTED = {"ConfigMap", "ServiceMonitor", "PrometheusRule"}


def fail(msg):
    sys.exit(f"error: k8s/monitoring: {msg}")


def main(rendered, out):
    out = pathlib.Path(out)
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    kinds = [d.get("kind") for d in docs]
    if set(kinds) != EXPECTED or len(kinds) != len(EXPECTED):
        fail(f"renders {sorted(kinds)}, expected one each of {sorted(EXPECTED)}")
    standard = [d for d in docs if d["kind"] not in CUSTOM]
    with open(out / "standard.yaml", "w") as f:
        yaml.safe_dump_all(standard, f)
    for d in docs:
        if d["kind"] in CUSTOM:
            with open(out / f"{d['kind']}.yaml", "w") as f:
                yaml.safe_dump(d, f)

    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    with open(out / "rules.yaml", "w") as f:
        yaml.safe_dump(rule["spec"], f)
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    if not alerts:
        fail("the PrometheusRule has no alerts")
    for r in alerts:
        missing = [k for k in ("summary", "description", "runbook_url") if not r.get("annotations", {}).get(k)]
        if missing or r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            fail(f"alert {r['alert']}: needs severity critical|warning|info and {missing or 'annotations'}")
        if "for" not in r:
            fail(f"alert {r['alert']}: no `for:` (it would page on one bad evaluation)")

    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    if cm["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
        fail("the dashboard ConfigMap lacks the label grafana_dashboard: \"1\"")
    shipped = cm["data"].get("grafana-dashboard.json")
    source = pathlib.Path("k8s/monitoring/grafana-dashboard.json").read_text()
    if shipped != source:
        fail("the dashboard ConfigMap does not carry k8s/monitoring/grafana-dashboard.json")
    dash = json.loads(source)
    ids = [p["id"] for p in dash["panels"]]
    if len(ids) != len(set(ids)):
        fail("dashboard panel ids repeat")
    for p in dash["panels"]:
        if p["type"] != "row" and not all(t.get("expr") for t in p.get("targets", [None])):
            fail(f"dashboard panel {p['title']!r} has a target without expr")
    print(f"monitoring kit: {len(alerts)} alerts, {len(ids)} dashboard panels")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
