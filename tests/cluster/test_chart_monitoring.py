"""The chart's monitoring with the real tools: promtool and a real Prometheus.

- `promtool check rules` on the PrometheusRule that helm renders (default and
  non-default values);
- `promtool test rules` (tests/data/prometheus/alerts.test.yml): every alert
  fires when it should, with the labels Alertmanager routes by, and not when it
  should not; the leader-failover case keeps TrialforgeExperimentFailed firing,
  and fails without keep_firing_for (so the test sees the flap);
- values.schema.json takes exactly the durations Prometheus takes;
- `promtool check metrics` on the real operator's /metrics, mid-experiment;
- a real Prometheus scrapes the real operator on loopback while experiments run
  on the kwok cluster: every dashboard query and template variable returns data,
  and the rendered alert rules evaluate on the live series.

Prometheus and promtool come from Debian's `prometheus` package, which
`e2e/cluster deps` installs (`make test` runs it). When they are missing these
tests FAIL with that reason; they are never skipped.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from clusterlib import REPO, KubeCluster, tfcluster, wait_for
from operatorlib import Cluster, OperatorProcess, Reporter, batch, experiment, free_port, post

pytestmark = pytest.mark.cluster

CHART = REPO / "charts" / "trialforge"
DASHBOARD = CHART / "dashboards" / "trialforge.json"
ALERT_TESTS = REPO / "tests" / "data" / "prometheus" / "alerts.test.yml"
SCHEMA = CHART / "values.schema.json"
RELEASE, RELEASE_NS = "tf", "tf-system"
JOB = f"{RELEASE}-trialforge"  # the Service's name: the job label under a ServiceMonitor
ALERTS = {
    "TrialforgeOperatorDown",
    "TrialforgeExperimentFailed",
    "TrialforgeTrialsStuckPending",
    "TrialforgeIngestRejections",
    "TrialforgeReconcileErrors",
}
MISSING = (
    "is not installed: Debian's `prometheus` package brings it; `e2e/cluster deps` "
    "installs it (make test does)"
)


def tool(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(path).exists():
        pytest.fail(f"{name} {MISSING}", pytrace=False)
    return path


def helm_bin() -> str:
    path = tfcluster.bin_dir() / "helm"
    if not path.exists():
        pytest.fail(f"helm is not built: {path} (run e2e/build)", pytrace=False)
    return str(path)


def render_rule(**values: Any) -> dict[str, Any]:
    args = []
    for key, value in {"metrics.prometheusRule.enabled": True, **values}.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    out = subprocess.run(
        [helm_bin(), "template", RELEASE, str(CHART), "--namespace", RELEASE_NS, *args,
         "--show-only", "templates/prometheusrule.yaml"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rule = yaml.safe_load(out.stdout)
    assert rule["kind"] == "PrometheusRule", rule
    return rule


def rules_file(rule: dict[str, Any], path: Path) -> Path:
    """The PrometheusRule's spec is a Prometheus rule file (what prometheus-operator loads)."""
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], capture_output=True, text=True, input=stdin, timeout=120
    )


def alert_tests(tmp_path: Path, rule: dict[str, Any], only: set[str] | None = None) -> Path:
    """alerts.test.yml (optionally only the named test groups) beside the rendered rules,
    less their annotations (promtool compares annotations whole; their templates are
    checked by `promtool check rules`, their runbook_url by the tests below)."""
    rule = copy.deepcopy(rule)
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            r.pop("annotations", None)
    rules_file(rule, tmp_path / "rules.yml")
    doc = yaml.safe_load(ALERT_TESTS.read_text())
    if only is not None:
        doc["tests"] = [t for t in doc["tests"] if t["name"] in only]
        assert {t["name"] for t in doc["tests"]} == only
    out = tmp_path / "alerts.test.yml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


# -- promtool on the rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "metrics.prometheusRule.pendingFor": "1h30m",
            "metrics.prometheusRule.operatorDownFor": "90s",
            "metrics.prometheusRule.keepFiringFor": "0s",
            "metrics.prometheusRule.rejectionsPerSecond": 2.5,
            "fullnameOverride": "ml-operator",
        },
    ],
    ids=["default", "non-default"],
)
def test_promtool_check_rules_accepts_the_rendered_rule(
    values: dict[str, Any], tmp_path: Path
) -> None:
    path = rules_file(render_rule(**values), tmp_path / "rules.yml")
    proc = promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in proc.stdout, proc.stdout


def test_promtool_check_rules_catches_a_broken_rule(tmp_path: Path) -> None:
    rule = render_rule()
    rule["spec"]["groups"][0]["rules"][1]["expr"] += " by (namespace"  # unbalanced
    proc = promtool("check", "rules", str(rules_file(rule, tmp_path / "rules.yml")))
    assert proc.returncode != 0 and "TrialforgeExperimentFailed" in proc.stderr, proc.stderr


def test_every_alert_has_a_promtool_unit_test() -> None:
    doc = yaml.safe_load(ALERT_TESTS.read_text())
    tested = {case["alertname"] for t in doc["tests"] for case in t["alert_rule_test"]}
    fired = {
        case["alertname"]
        for t in doc["tests"]
        for case in t["alert_rule_test"]
        if case["exp_alerts"]
    }
    rendered = {r["alert"] for g in render_rule()["spec"]["groups"] for r in g["rules"]}
    assert rendered == ALERTS
    assert tested == fired == rendered, "each alert is tested firing (and quiet)"


def test_promtool_test_rules_every_alert(tmp_path: Path) -> None:
    proc = promtool("test", "rules", str(alert_tests(tmp_path, render_rule())))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout, proc.stdout


def test_without_keep_firing_for_a_leader_failover_flaps(tmp_path: Path) -> None:
    """The failover case is a real check: with keep_firing_for off, the alert resolves
    while no replica reports leader=1 and is only pending (not firing) once the new
    leader's gauges arrive, and promtool says so."""
    rule = render_rule(**{"metrics.prometheusRule.keepFiringFor": "0s"})
    tests = alert_tests(tmp_path, rule, only={"experiment-failed-leader-failover"})
    proc = promtool("test", "rules", str(tests))
    assert proc.returncode != 0, proc.stdout
    out = proc.stdout + proc.stderr
    assert "TrialforgeExperimentFailed" in out and "10m30s" in out, out


def test_alert_labels_and_runbooks(tmp_path: Path) -> None:
    rule = render_rule(**{"metrics.prometheusRule.runbookURL": "https://example.org/rb.md"})
    docs = (REPO / "docs" / "runbooks.md").read_text()
    headings = {m.lower() for m in re.findall(r"^## (\w+)$", docs, re.M)}
    assert headings == {a.lower() for a in ALERTS}, "one runbook section per alert"
    for r in rule["spec"]["groups"][0]["rules"]:
        assert r["annotations"]["runbook_url"] == f"https://example.org/rb.md#{r['alert'].lower()}"
        assert r["labels"]["severity"] in ("warning", "critical")
    operator_down = next(
        r for r in rule["spec"]["groups"][0]["rules"] if r["alert"] == "TrialforgeOperatorDown"
    )
    assert operator_down["labels"]["job"] == JOB
    assert operator_down["labels"]["namespace"] == RELEASE_NS


def render_all(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [helm_bin(), "template", RELEASE, str(CHART), "--namespace", RELEASE_NS, *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


MONITORING_ON = ["--set", "metrics.serviceMonitor.enabled=true",
                 "--set", "metrics.prometheusRule.enabled=true"]  # fmt: skip


def test_a_default_kube_prometheus_stack_selects_the_monitoring_objects() -> None:
    """kube-prometheus-stack's Prometheus selects ServiceMonitors and PrometheusRules by
    `release: <its release name>` (serviceMonitorSelectorNilUsesHelmValues); its Grafana
    sidecar loads ConfigMaps labelled grafana_dashboard=1."""
    docs = render_all(*MONITORING_ON)
    by_kind = {d["kind"]: d for d in docs}
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert by_kind[kind]["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind
    assert by_kind["ConfigMap"]["metadata"]["labels"]["grafana_dashboard"] == "1"
    # Another stack's release name, and labels that win over it.
    docs = render_all(
        *MONITORING_ON,
        "--set", "metrics.prometheusRelease=prom",
        "--set", "metrics.prometheusRule.labels.release=rules-only",
        "--set", "metrics.serviceMonitor.labels.team=ml",
    )  # fmt: skip
    by_kind = {d["kind"]: d for d in docs}
    assert by_kind["ServiceMonitor"]["metadata"]["labels"]["release"] == "prom"
    assert by_kind["ServiceMonitor"]["metadata"]["labels"]["team"] == "ml"
    assert by_kind["PrometheusRule"]["metadata"]["labels"]["release"] == "rules-only"
    docs = render_all(*MONITORING_ON, "--set", "metrics.prometheusRelease=")
    assert all("release" not in d["metadata"]["labels"] for d in docs)


def test_common_labels_include_managed_by() -> None:
    for d in render_all(*MONITORING_ON):
        assert d["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm", d["kind"]


def test_helm_test_pod_checks_the_operator_answers() -> None:
    docs = render_all()
    pod = next(d for d in docs if d["kind"] == "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    assert f"http://{JOB}.{RELEASE_NS}.svc:8080" in script
    assert '"/healthz"' in script and '"/metrics"' in script
    compile(script, "helm-test", "exec")  # the Python it runs is valid
    # The Service does not route to it; the NetworkPolicy lets it in.
    svc = next(d for d in docs if d["kind"] == "Service")
    labels = pod["metadata"]["labels"]
    assert not all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    netpol = next(d for d in docs if d["kind"] == "NetworkPolicy")
    selector = {"app.kubernetes.io/instance": RELEASE, "app.kubernetes.io/component": "helm-test"}
    assert {"podSelector": {"matchLabels": selector}} in netpol["spec"]["ingress"][0]["from"]
    assert all(labels[k] == v for k, v in selector.items())
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert not any(d["kind"] == "Pod" for d in render_all("--set", "helmTest.enabled=false"))


# -- values.schema.json and Prometheus agree on durations -------------------------------------

DURATIONS = [
    "0", "30s", "1m30s", "90s", "5m", "1h", "1h30m", "2d", "1w", "1y", "100ms", "1d12h",
    "1.5m", "", "5", "m", "1s1m", "30 s", "-1m", "1m30", "1M", "1h1h", "0.5s", "1mo",
]  # fmt: skip


def test_schema_durations_are_the_ones_prometheus_accepts(tmp_path: Path) -> None:
    schema = json.loads(SCHEMA.read_text())
    rule_props = schema["properties"]["metrics"]["properties"]["prometheusRule"]["properties"]
    sm_props = schema["properties"]["metrics"]["properties"]["serviceMonitor"]["properties"]
    fields = {
        f"prometheusRule.{k}": rule_props[k]
        for k in ("pendingFor", "operatorDownFor", "keepFiringFor")
    } | {f"serviceMonitor.{k}": sm_props[k] for k in ("interval", "scrapeTimeout")}
    disagree = []
    for value in DURATIONS:
        path = tmp_path / "d.yml"
        path.write_text(
            yaml.safe_dump({"groups": [{"name": "g", "rules": [
                {"alert": "A", "expr": "vector(1)", "for": value}
            ]}]})
        )  # fmt: skip
        prometheus_ok = promtool("check", "rules", str(path)).returncode == 0
        for name, prop in fields.items():
            schema_ok = len(value) >= prop.get("minLength", 0) and bool(
                re.fullmatch(prop["pattern"], value)
            )
            if schema_ok != prometheus_ok:
                disagree.append(f"{name} {value!r}: schema {schema_ok}, Prometheus {prometheus_ok}")
    assert not disagree, "\n".join(disagree)
    # And helm applies that schema, naming the key.
    for key in ("prometheusRule.pendingFor", "serviceMonitor.interval"):
        proc = subprocess.run(
            [helm_bin(), "template", RELEASE, str(CHART), "--set", f"metrics.{key}=1.5m"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode != 0, key
        assert f"/metrics/{key.replace('.', '/')}" in proc.stderr, proc.stderr


# -- the real operator's /metrics, and a real Prometheus scraping it --------------------------


def loss_curve(trial: dict[str, Any]) -> list[tuple[int, dict[str, float]]]:
    x = float(trial["spec"]["parameters"]["x"])
    return [(step, {"loss": (x - 0.3) ** 2 + 1.0 / step}) for step in (1, 2, 3)]


def scrape(op: OperatorProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.port}/metrics", timeout=10) as r:
        return r.read().decode()


class Prometheus:
    """`prometheus` on loopback, scraping the operator every second, with the chart's rules."""

    def __init__(self, tmp_path: Path, target: str, rule: dict[str, Any]) -> None:
        self.port = free_port()
        self.dir = tmp_path / "prometheus"
        self.dir.mkdir()
        rules = rules_file(rule, self.dir / "rules.yml")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            # job_name = the Service's name, as a ServiceMonitor scrape names it.
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
        }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = self.dir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [
            tool("prometheus"),
            f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.console.templates=/nonexistent",
            "--web.console.libraries=/nonexistent",
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.ready, 60, what="Prometheus /-/ready", diagnostics=self.log_tail)

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"prometheus exited {self.proc.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "--- prometheus log ---\n" + "\n".join(lines[-40:])

    def api(self, path: str, **params: str | list[str]) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{query}"
        with urllib.request.urlopen(url, timeout=30) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    made: list[Prometheus] = []

    def make(target: str, rule: dict[str, Any]) -> Prometheus:
        p = Prometheus(tmp_path, target, rule)
        made.append(p)
        p.start()
        return p

    yield make
    for p in made:
        p.stop()


def dashboard_targets(variables: dict[str, str]) -> list[tuple[str, str]]:
    """(panel/ref, PromQL) of every panel target, with the dashboard's and Grafana's
    variables substituted as Grafana would."""
    d = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            walk(p.get("panels") or [])
            for t in p.get("targets") or []:
                out.append((f"{p['title']} {t['refId']}", substitute(t["expr"], variables)))

    walk(d["panels"])
    return out


def substitute(expr: str, variables: dict[str, str]) -> str:
    for name, value in variables.items():
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def template_variables() -> list[tuple[str, str, str]]:
    """(name, selector, label) of each label_values() variable, in dashboard order."""
    d = json.loads(DASHBOARD.read_text())
    out = []
    for var in d["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q.strip(), re.S)
        assert m, q
        out.append((var["name"], m.group(1), m.group(2)))
    return out


def test_promtool_check_metrics_on_the_operators_metrics(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    kube.create(experiment("lint", max_trials=2, parallelism=2, run_seconds="8"))
    with Reporter(cluster, namespace, operator.port, loss_curve):
        # Mid-experiment: trial metric series, labelled counters and histograms exist.
        kube.until(lambda: "trialforge_trial_metric{" in scrape(operator), 90, "trial metrics")
        code, _ = post(
            operator.port, batch(namespace, "lint-0", [(9, {"loss": 1.0})], tok="0" * 64)
        )
        assert code == 403
        exposition = scrape(operator)
    for name in (
        "trialforge_trial_metric{",
        "trialforge_observations_rejected_total{",
        "trialforge_reconcile_duration_seconds_bucket{",
        "trialforge_leader ",
    ):
        assert name in exposition, f"/metrics lacks {name}"
    proc = promtool("check", "metrics", stdin=exposition)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), (
        f"promtool check metrics: {proc.stdout}{proc.stderr}"
    )
    # The check can fail: a counter without _total is refused.
    bad = promtool("check", "metrics", stdin="# HELP x a\n# TYPE x counter\nx 1\n")
    assert bad.returncode != 0 and "_total" in bad.stdout + bad.stderr


def test_prometheus_scrapes_the_operator_and_every_dashboard_query_has_data(
    cluster: KubeCluster,
    namespace: str,
    operator: OperatorProcess,
    kube: Cluster,
    prometheus_for: Any,
) -> None:
    started = time.time()
    prom = prometheus_for(f"127.0.0.1:{operator.port}", render_rule())
    kube.create(experiment("mon", max_trials=4, parallelism=2, run_seconds="6"))
    kube.create(
        experiment(
            "broken",
            max_trials=2,
            max_failed=0,
            run_seconds="1",
            annotations={"trialforge.io/kwok-exit-code": "1"},
        )
    )
    variables = {
        "namespace": namespace,
        "experiment": "mon|broken",
        "metric": "loss",
        "__rate_interval": "1m",
        "datasource": "prometheus",
    }
    queries = dashboard_targets(variables)
    assert len(queries) >= 20

    missing: list[str] = []

    def all_have_data() -> bool:
        now = time.time()
        missing[:] = [
            f"{where}: {expr}"
            for where, expr in queries
            if not prom.api("query_range", query=expr, start=str(started), end=str(now),
                            step="1")["result"]
        ]  # fmt: skip
        return not missing

    with Reporter(cluster, namespace, operator.port, loss_curve) as reporter:
        kube.until(lambda: prom.api("query", query="up")["result"], 30, "a scrape")
        # An ingest rejection, for the rejections panel and the alert's series.
        code, _ = post(operator.port, batch(namespace, "mon-0", [(9, {"loss": 1.0})], tok="0" * 64))
        assert code == 403
        kube.until(lambda: kube.finished("broken"), 120, "experiment broken to fail")
        kube.until(lambda: kube.finished("mon"), 180, "experiment mon to finish")
        wait_for(
            all_have_data,
            60,
            what="every dashboard query to return data",
            diagnostics=lambda: "no data:\n" + "\n".join(missing) + "\n" + prom.log_tail(),
        )
    kube.check(not reporter.errors, f"reporter errors: {reporter.errors}")
    assert kube.phase("broken") == "Failed" and kube.phase("mon") == "Succeeded"

    # Template variables: label_values(<selector>, <label>) is Grafana's series query.
    values: dict[str, set[str]] = {}
    for name, selector, label in template_variables():
        series = prom.api(
            "series",
            **{"match[]": substitute(selector, {**variables, "experiment": "mon|broken"})},
            start=str(started),
            end=str(time.time()),
        )
        values[name] = {s[label] for s in series if label in s}
    assert namespace in values["namespace"], values
    assert {"mon", "broken"} <= values["experiment"], values
    assert values["metric"] == {"loss"}, values

    # The phase panel shows each experiment's phase now (once a scrape saw the end).
    phase_expr = next(e for w, e in queries if w.startswith("Experiment phase"))

    def phases() -> set[tuple[str, str]]:
        result = prom.api("query", query=phase_expr)["result"]
        return {(r["metric"]["experiment"], r["metric"]["phase"]) for r in result}

    wait_for(
        lambda: phases() == {("mon", "Succeeded"), ("broken", "Failed")},
        30,
        what="the phase panel to show mon Succeeded and broken Failed",
        diagnostics=lambda: f"phases: {phases()}",
    )

    # The chart's rules run on the live series: the failed experiment's alert is
    # pending (its `for` is 1m), labelled for routing, with its runbook.
    def failed_alert() -> dict[str, Any] | None:
        alerts = prom.api("alerts")["alerts"]
        return next(
            (
                a
                for a in alerts
                if a["labels"]["alertname"] == "TrialforgeExperimentFailed"
                and a["labels"].get("experiment") == "broken"
            ),
            None,
        )

    alert = wait_for(failed_alert, 30, what="TrialforgeExperimentFailed pending")
    assert alert["labels"]["namespace"] == namespace and alert["state"] in ("pending", "firing")
    assert alert["annotations"]["runbook_url"].endswith("#trialforgeexperimentfailed")
    rules = prom.api("rules")["groups"][0]["rules"]
    assert {r["name"] for r in rules} == ALERTS
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    down = next(r for r in rules if r["name"] == "TrialforgeOperatorDown")
    assert down["state"] == "inactive", "the operator leads: not down"
