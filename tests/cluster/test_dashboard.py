"""`trialforge dashboard --experiment` follows a running cluster Experiment (kwok pods,
observations through the real ingest endpoint), and a real browser opens it;
`trialforge export optuna --experiment` writes the same study into sqlite."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from clusterlib import KubeCluster
from operatorlib import LABEL_TRIAL, Cluster, OperatorProcess, Reporter, experiment

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.unit.test_reporting_dashboard import (
    ARTIFACTS,
    _attr,
    browser,  # noqa: F401  (the fixture)
    get_json,
    start_dashboard,
    stop,
)

ROOT = Path(__file__).resolve().parents[2]


RUN_SECONDS = "trialforge.io/kwok-run-seconds"


def release(kube: Cluster, name: str, trials: set[str]) -> None:
    """Let these trials' pods end now (kwok's stage reads the annotation again)."""
    for pod in kube.pods(name):
        labels = pod.metadata.labels or {}
        if labels.get(LABEL_TRIAL) in trials:
            patch = {"metadata": {"annotations": {RUN_SECONDS: "0"}}}
            kube.core.patch_namespaced_pod(pod.metadata.name, kube.ns, patch)


def curve(trial: dict[str, Any]) -> list[tuple[int, dict[str, float]]]:
    index = int(trial["spec"]["index"])
    if index in (0, 1):
        return [(1, {"loss": 0.5 - 0.1 * index}), (2, {"loss": 0.4 - 0.1 * index}),
                (3, {"loss": 0.3 - 0.1 * index})]  # fmt: skip
    if index == 2:
        return [(1, {"loss": 100.0})]  # hopeless: the median pruner stops it
    return [(1, {"loss": math.nan})]  # diverged: failed


def test_the_dashboard_follows_a_cluster_experiment(
    cluster: KubeCluster,
    namespace: str,
    operator: OperatorProcess,
    kube: Cluster,
    browser: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    name = "dash"
    kube.create(
        experiment(
            name,
            max_trials=4,
            parallelism=2,
            # Every pod runs until the test lets it end (the first two), or the operator
            # stops it (pruned, diverged): no race with the mirror's reads.
            run_seconds="forever",
            early_stopping={
                "algorithm": "median",
                "settings": {"nStartupTrials": 2, "nWarmupSteps": 0},
            },
        )
    )
    args = ["--experiment", name, "-n", namespace, "--kubeconfig", str(cluster.kubeconfig)]
    dashboard, base = start_dashboard(*args)
    try:
        with Reporter(cluster, namespace, operator.port, curve):

            def running() -> list[dict[str, Any]]:
                trials = get_json(f"{base}/api/studies/0")["trials"]
                return [t for t in trials if t["state"] == "Running" and t["intermediate_values"]]

            def both_running() -> list[dict[str, Any]]:
                trials = running()
                return trials if len(trials) == 2 else []

            live = kube.until(both_running, 90, "two running trials with their steps in the mirror")
            assert {_attr(t, "trialforge_trial") for t in live} == {f"{name}-0", f"{name}-1"}
            assert [v["step"] for v in live[0]["intermediate_values"]] == [1, 2, 3]
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/dashboard/studies/0/trials")
            page.get_by_text("Running").first.wait_for(timeout=60_000)
            body = page.inner_text("body")
            assert name in body and "Trial 0" in body and "Trial 1" in body
            page.screenshot(path=str(ARTIFACTS / "dashboard-cluster-running.png"))
            release(kube, name, {f"{name}-0", f"{name}-1"})

            kube.until(lambda: kube.finished(name), 180, f"experiment {name} to finish")

        want = {f"{name}-0": "Complete", f"{name}-1": "Complete", f"{name}-2": "Pruned",
                f"{name}-3": "Fail"}  # fmt: skip

        def caught_up() -> dict[str, dict[str, Any]]:
            trials = get_json(f"{base}/api/studies/0")["trials"]
            by_name = {_attr(t, "trialforge_trial"): t for t in trials}
            return by_name if {n: t["state"] for n, t in by_name.items()} == want else {}

        trials = kube.until(caught_up, 60, f"the mirror to show {want}")
        assert _attr(trials[f"{name}-2"], "reason") == "EarlyStopped"
        assert _attr(trials[f"{name}-3"], "reason") == "ObjectiveNotFinite"
        assert [v["value"] for v in trials[f"{name}-1"]["intermediate_values"]] == pytest.approx(
            [0.4, 0.3, 0.2]
        )
        page.goto(f"{base}/dashboard/studies/0/trials")
        page.get_by_text("Pruned").first.wait_for(timeout=60_000)
        body = page.inner_text("body")
        for n in range(4):
            assert f"Trial {n}" in body
        assert "Fail" in body and "Complete" in body
        page.screenshot(path=str(ARTIFACTS / "dashboard-cluster.png"))
        page.close()
    finally:
        assert stop(dashboard) == 0

    # The same into a sqlite file, read back by Optuna.
    url = f"sqlite:///{tmp_path / 'o.db'}"
    out = subprocess.run(
        [sys.executable, "-m", "trialforge.cli", "export", "optuna", *args, "--storage", url],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "operator")},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["created"] == 4
    study = optuna.load_study(study_name=name, storage=url)
    states = {t.user_attrs["trialforge_trial"]: t.state.name for t in study.trials}
    assert states == {f"{name}-0": "COMPLETE", f"{name}-1": "COMPLETE", f"{name}-2": "PRUNED",
                      f"{name}-3": "FAIL"}  # fmt: skip
    assert study.best_trial.user_attrs["trialforge_trial"] == f"{name}-1"
