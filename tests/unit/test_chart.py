"""The Helm chart's static parts: CRDs, the Grafana dashboard, the PrometheusRule's queries.

Every PromQL expression of the dashboard (panels and template variables) and
of the PrometheusRule is parsed with a real PromQL parser (promql-parser, the
Rust implementation); the metric names it selects must be among those the
operator really exports: the families of the exporter's CollectorRegistry (the
one /metrics serves), with sample names derived from each family's type. The
chart rendered with helm is tested in
tests/cluster/test_chart.py.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "trialforge"
DASHBOARD = CHART / "dashboards" / "trialforge.json"
EXPORTER = "trialforge.metrics.exporter"

# Grafana's built-in variables, as Grafana substitutes them before querying.
GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$__interval": "30s",
    "$__range": "6h",
    "${__rate_interval}": "1m",
}


# -- what the operator exports --------------------------------------------------------


def sample_names(family: Any) -> set[str]:
    """The series names a metric family produces, by its type (prometheus_client)."""
    name, kind = family.name, family.type
    if kind == "counter":
        return {f"{name}_total", f"{name}_created"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
    if kind == "summary":
        return {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
    if kind == "gaugehistogram":
        return {f"{name}_bucket", f"{name}_gsum", f"{name}_gcount"}
    if kind == "info":
        return {f"{name}_info"}
    return {name} | {s.name for s in family.samples}


def exported_metric_names() -> set[str]:
    """Every series name the operator's /metrics can serve (it serves the exporter's registry)."""
    from prometheus_client import CollectorRegistry

    module = importlib.import_module(EXPORTER)
    registries = [v for v in vars(module).values() if isinstance(v, CollectorRegistry)]
    assert registries, f"{EXPORTER} has no CollectorRegistry"
    names: set[str] = set()
    for registry in registries:
        for family in registry.collect():
            if family.name.startswith("trialforge_"):
                names |= sample_names(family)
    return names


# -- what the chart queries -----------------------------------------------------------


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from all_panels(p.get("panels") or [])


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    d = dashboard()
    out = []
    for p in all_panels(d["panels"]):
        for t in p.get("targets") or []:
            out.append((f"panel {p['title']!r} {t['refId']}", t["expr"]))
    for var in d["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q.strip(), re.S)
        assert m, f"variable {var['name']}: expected label_values(<selector>, <label>), got {q}"
        out.append((f"variable {var['name']}", m.group(1)))
    return out


def grafana_expand(expr: str) -> str:
    for k, v in GRAFANA_VARS.items():
        expr = expr.replace(k, v)
    assert "$__" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (parsed, not grepped)."""
    tree = promql_parser.parse(expr)
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):  # also inside a MatrixSelector
            by_name = [m for m in node.matchers.matchers if m.name == "__name__"]
            for m in by_name:
                assert m.op == promql_parser.MatchOp.Equal, f"regex metric name in {expr}"
                found.add(m.value)
            assert node.name or by_name, f"a selector without a metric name in {expr}"
            if node.name:
                found.add(node.name)

    promql_parser.walk(tree, visit)
    return found


def rendered_rule_exprs() -> list[tuple[str, str]]:
    """The PrometheusRule's alert expressions, rendered by helm (when it is built)."""
    sys.path.insert(0, str(REPO / "e2e"))
    import tfcluster

    helm = tfcluster.bin_dir() / "helm"
    if not helm.exists():
        pytest.skip("helm is not built yet (e2e/build); tests/cluster/test_chart.py checks too")
    out = subprocess.run(
        [
            str(helm),
            "template",
            "tf",
            str(CHART),
            "--namespace",
            "tf-system",
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--show-only",
            "templates/prometheusrule.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    rule = yaml.safe_load(out)
    return [(f"alert {r['alert']}", r["expr"]) for g in rule["spec"]["groups"] for r in g["rules"]]


# -- the tests ------------------------------------------------------------------------


def test_chart_crds_are_the_generated_crds_byte_for_byte() -> None:
    from trialforge.api.crd import all_crds, render

    top = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert chart == top, "charts/trialforge/crds differs from crds/: run `make crds`"
    generated = {name: render(crd).encode() for name, crd in all_crds().items()}
    assert chart == generated, "crds/ is out of date with the models: run `make crds`"


def test_dashboard_is_a_grafana_dashboard() -> None:
    d = dashboard()
    assert d["uid"] == "trialforge-overview" and d["title"]
    ids = [p["id"] for p in all_panels(d["panels"])]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for p in all_panels(d["panels"]):
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
    variables = {v["name"] for v in d["templating"]["list"]}
    assert {"datasource", "namespace", "experiment", "metric"} <= variables
    used = {m for _, q in dashboard_queries() for m in re.findall(r"\$(\w+)", q)}
    assert used - {"__rate_interval"} <= variables, "every $variable is defined"


def test_dashboard_covers_what_the_issue_asks_for() -> None:
    titles = {p["title"] for p in all_panels(dashboard()["panels"])}
    names = {m for _, q in dashboard_queries() for m in metric_names(grafana_expand(q))}
    for metric in (
        "trialforge_trials",  # trials by phase
        "trialforge_trial_metric",  # objective per trial over time
        "trialforge_experiment_best_objective",  # best so far
        "trialforge_running_gpus",
        "trialforge_experiment_gpu_seconds",
        "trialforge_observations_ingested_total",  # ingest rate
        "trialforge_observations_rejected_total",  # and rejections
        "trialforge_reconcile_duration_seconds_bucket",  # reconcile latency
    ):
        assert metric in names, metric
    assert {"Trials by phase", "Best objective so far", "Reconcile latency"} <= titles


@pytest.mark.parametrize(("where", "expr"), dashboard_queries(), ids=lambda v: str(v)[:60])
def test_dashboard_query_parses_and_names_only_exported_metrics(where: str, expr: str) -> None:
    names = metric_names(grafana_expand(expr))
    assert names, f"{where}: selects no metric"
    unknown = names - exported_metric_names()
    assert not unknown, f"{where}: {sorted(unknown)} are not exported by the operator"


def test_prometheus_rule_queries_parse_and_name_only_exported_metrics() -> None:
    rules = rendered_rule_exprs()
    alerts = {where.split()[1] for where, _ in rules}
    assert {
        "TrialforgeOperatorDown",
        "TrialforgeExperimentFailed",
        "TrialforgeTrialsStuckPending",
        "TrialforgeIngestRejections",
    } <= alerts
    exported = exported_metric_names()
    for where, expr in rules:
        names = metric_names(expr)
        assert names, f"{where}: selects no metric"
        assert not names - exported, f"{where}: {sorted(names - exported)} are not exported"


def test_the_name_check_catches_a_wrong_name() -> None:
    """The parser-based extraction sees names inside functions, aggregations and binaries."""
    expr = (
        'histogram_quantile(0.9, sum by (le) (rate(a_bucket{x="1"}[5m]))) '
        '/ on() group_left absent(b == 1) unless c offset 5m + {__name__="d"}'
    )
    assert metric_names(expr) == {"a_bucket", "b", "c", "d"}
    assert metric_names(grafana_expand("rate(trialforge_nope_total[$__rate_interval])")) == {
        "trialforge_nope_total"
    }


# -- monitoring: units, the phase panel, no `pod` label, runbooks, durations ----------

RULE_TEMPLATE = CHART / "templates" / "prometheusrule.yaml"
RUNBOOKS = REPO / "docs" / "runbooks.md"


def test_every_dashboard_panel_has_a_unit() -> None:
    for p in all_panels(dashboard()["panels"]):
        if p["type"] == "row":
            continue
        assert p["fieldConfig"]["defaults"].get("unit"), f"panel {p['title']!r} has no unit"


def test_dashboard_has_an_experiment_phase_panel() -> None:
    panel = next(p for p in all_panels(dashboard()["panels"]) if p["title"] == "Experiment phase")
    (target,) = panel["targets"]
    assert metric_names(grafana_expand(target["expr"])) == {
        "trialforge_experiment_phase",
        "trialforge_leader",
    }
    assert target["instant"] and target["format"] == "table"
    # Each experiment shows its current phase (the gauge is 1 for it, 0 for the others).
    assert target["expr"].rstrip().endswith("== 1")
    assert "by (namespace, experiment, phase)" in target["expr"]


def label_names(expr: str) -> set[str]:
    """Every label an expression matches on, groups by or joins on (parsed)."""
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.update(m.name for m in node.matchers.matchers)
        modifier = getattr(node, "modifier", None)
        if isinstance(node, promql_parser.AggregateExpr) and modifier is not None:
            found.update(modifier.labels)
        if isinstance(node, promql_parser.BinaryExpr) and modifier is not None:
            matching = getattr(modifier, "matching", None)
            if matching is not None:
                found.update(matching.labels)
            found.update(getattr(modifier, "group_labels", None) or [])

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def test_dashboard_works_without_the_pod_label() -> None:
    """Prometheus outside Kubernetes (or a scrape without pod relabelling) has no `pod`."""
    for where, expr in dashboard_queries():
        assert "pod" not in label_names(grafana_expand(expr)), f"{where} uses pod: {expr}"
    for p in all_panels(dashboard()["panels"]):
        for t in p.get("targets") or []:
            assert "{{pod}}" not in t.get("legendFormat", ""), p["title"]
    assert "instance" in label_names("max by (instance) (trialforge_leader)")
    for uses_pod in (
        "max by (pod) (a)",
        'a{pod="x"}',
        "a and on (pod) b",
        "a * on (x) group_left (pod) b",
    ):
        assert "pod" in label_names(uses_pod), uses_pod


def test_every_alert_has_a_runbook_section() -> None:
    template = RULE_TEMPLATE.read_text()
    alerts = re.findall(r"^\s+- alert: (\w+)$", template, re.M)
    anchors = re.findall(r"runbook_url: \{\{ \$runbook \}\}#(\S+)$", template, re.M)
    assert len(alerts) == 5 and anchors == [a.lower() for a in alerts]
    # GitHub's anchor of `## TrialforgeOperatorDown` is #trialforgeoperatordown.
    headings = re.findall(r"^## (.+)$", RUNBOOKS.read_text(), re.M)
    assert [h.lower() for h in headings] == anchors


def test_the_ingest_runbook_names_every_rejection_reason() -> None:
    from trialforge.kube.ingest import REJECTED_LABEL

    text = RUNBOOKS.read_text()
    section = text[text.index("## TrialforgeIngestRejections") :]
    section = section[: section.find("\n## ", 1)] if "\n## " in section[1:] else section
    for label in REJECTED_LABEL.values():
        assert f"| `{label}` |" in section, f"runbook lacks rejection reason {label}"


PROMETHEUS_DURATIONS = ["0", "30s", "1m30s", "90s", "1h30m", "2d", "1w", "1y", "100ms", "1d12h"]
NOT_DURATIONS = ["1.5m", "", "5", "m", "1s1m", "30 s", "-1m", "1m30", "1h1h", "0.5s"]


def test_schema_durations_follow_prometheus() -> None:
    """Prometheus's own duration grammar (units in order, whole numbers); promtool checks
    the same lists in tests/cluster/test_chart_monitoring.py."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    metrics = schema["properties"]["metrics"]["properties"]
    props = [
        metrics["serviceMonitor"]["properties"]["interval"],
        metrics["serviceMonitor"]["properties"]["scrapeTimeout"],
        *(
            metrics["prometheusRule"]["properties"][k]
            for k in ("pendingFor", "operatorDownFor", "keepFiringFor")
        ),
    ]
    for prop in props:
        for value in PROMETHEUS_DURATIONS:
            assert re.fullmatch(prop["pattern"], value), value
        for value in NOT_DURATIONS:
            ok = len(value) >= prop.get("minLength", 0) and re.fullmatch(prop["pattern"], value)
            assert not ok, value


def workload_rules() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of the chart's workload rules, read from the
    `trialforge.workloadRules` define (plain YAML inside, no template actions)."""
    text = (CHART / "templates" / "_helpers.tpl").read_text()
    m = re.search(r'{{-? define "trialforge.workloadRules" -?}}(.*?){{-? end -?}}', text, re.S)
    assert m, "no trialforge.workloadRules define in _helpers.tpl"
    rules = yaml.safe_load(m.group(1))
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}  # fmt: skip


def test_workload_rules_grant_what_the_operator_does_with_kueue_and_pause() -> None:
    from trialforge.kube import kueue

    granted = workload_rules()
    needed = {
        (kueue.GROUP, kueue.WORKLOADS, "list"),  # Kube.list_workloads: why a queued Job waits
        (kueue.GROUP, kueue.WORKLOADS, "patch"),  # Kube.patch_workload: Pause with a queue
        ("batch", "jobs", "patch"),  # Kube.patch_job: Pause (suspend, or the paused mark)
    }
    assert needed <= granted, f"the chart does not grant {sorted(needed - granted)}"
    # and nothing more on Kueue's objects than that
    assert {(g, r, v) for g, r, v in granted if g == kueue.GROUP} == {
        (kueue.GROUP, kueue.WORKLOADS, "list"),
        (kueue.GROUP, kueue.WORKLOADS, "patch"),
    }
