"""An A/B/n experiment on the real control plane: design, verdicts and lineage in the
Experiment and Trial resources, and report/reproduce reading them back (issue 8).

The "trainer" is the Reporter thread (as in test_operator.py): each trial reports
a value from its configuration's true mean plus noise from the trial's own seed
(spec.seed, the TRIALFORGE_SEED its pod gets), so the verdicts are known.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from clusterlib import KubeCluster
from operatorlib import Cluster, OperatorProcess, Reporter, experiment

from trialforge.cli import main

pytestmark = pytest.mark.cluster

TRUE_LOSS = {0.3: 0.50, 0.4: 0.50, 0.5: 0.45, 0.6: 0.56}  # x -> the true mean loss


def curve(trial: dict[str, Any]) -> list[tuple[int, dict[str, float]]]:
    x = float(trial["spec"]["parameters"]["x"])
    value = TRUE_LOSS[x] + random.Random(int(trial["spec"]["seed"])).gauss(0.0, 0.01)
    return [(1, {"loss": value + 0.1}), (2, {"loss": value})]


def test_an_ab_n_experiment_writes_verdicts_and_lineage_to_the_cluster(
    cluster: KubeCluster,
    namespace: str,
    operator: OperatorProcess,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kube = Cluster(cluster, namespace, operator)
    name = "abn"
    xp = experiment(name, parallelism=4, run_seconds="1")
    spec = xp["spec"]
    del spec["budget"]["maxTrials"]
    spec["search"] = {"seed": 3}
    spec["baseline"] = {"parameters": {"x": 0.3}}
    spec["arms"] = [
        {"name": "same", "parameters": {"x": 0.4}},
        {"name": "lower", "parameters": {"x": 0.5}},
        {"name": "higher", "parameters": {"x": 0.6}},
    ]
    spec["repeats"] = 5
    spec["codeVersion"] = "git:abc123"
    spec["dataVersion"] = "dvc:v7"
    kube.create(xp)
    with Reporter(cluster, namespace, operator.port, curve) as reporter:
        status = kube.until(lambda: kube.finished(name), 180, f"experiment {name} to finish")
    kube.check(not reporter.errors, f"reporter errors: {reporter.errors}")
    kube.check(status["phase"] == "Succeeded" and status["reason"] == "Completed", str(status))

    trials = kube.trials(name)
    kube.check(len(trials) == 20, f"{len(trials)} trials; 4 arms x 5 repeats")
    configs = Counter(t["spec"].get("config") for t in trials)
    kube.check(configs == {"baseline": 5, "same": 5, "lower": 5, "higher": 5}, str(configs))
    kube.check(len({t["spec"]["seed"] for t in trials}) == 20, "every run its own seed")
    for t in trials:
        ts, tspec = t["status"], t["spec"]
        kube.check(tspec["role"] in ("baseline", "arm") and 0 <= tspec["repeat"] < 5, str(tspec))
        kube.check(tspec["codeVersion"] == "git:abc123", f"codeVersion kept: {tspec}")
        kube.check(tspec["dataVersion"] == "dvc:v7", f"dataVersion kept: {tspec}")
        kube.check(ts["phase"] == "Succeeded" and ts.get("node") and ts.get("imageDigest"), str(ts))

    # minimize loss: 0.45 < 0.50 is better, 0.56 is worse, 0.50 the same.
    rows = status["comparison"]
    verdicts = {r["arm"]: r["verdict"] for r in rows if r["role"] == "candidate"}
    kube.check(
        verdicts == {"same": "inconclusive", "lower": "better", "higher": "worse"}, str(rows)
    )
    base = rows[0]
    kube.check(base["role"] == "baseline" and base["n"] == 5 and "interim" not in base, str(base))
    lower = next(r for r in rows if r.get("arm") == "lower")
    kube.check(lower["ciLow"] <= -0.05 <= lower["ciHigh"], f"the CI covers the truth: {lower}")
    kube.check(any(r["role"] == "omnibus" for r in rows), "ANOVA across the arms")
    kube.check(status["best"]["parameters"] == {"x": 0.5}, f"best {status['best']}")

    # The report and reproduce read the same resources back.
    out = tmp_path / "report.md"
    args = ["--kubeconfig", str(cluster.kubeconfig)]
    assert main(["report", "--experiment", name, "-n", namespace, "-f", "md", "-o", str(out),
                 *args]) == 0  # fmt: skip
    text = out.read_text()
    for words in ("Comparison with the baseline", "better", "git:abc123", "dvc:v7"):
        kube.check(words in text, f"{words!r} not in the report")
    capsys.readouterr()
    trial = trials[0]
    tname = trial["metadata"]["name"]
    assert main(["reproduce", tname, "-n", namespace, *args]) == 0
    printed = capsys.readouterr().out
    job = yaml.safe_load(printed)
    kube.check(job["kind"] == "Job" and "ownerReferences" not in job["metadata"], printed)
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]
           ["env"]}  # fmt: skip
    kube.check(env["TRIALFORGE_SEED"] == str(trial["spec"]["seed"]), printed)
    # kubectl accepts it as it is (a server-side dry run).
    cluster.kubectl("-n", namespace, "create", "--dry-run=server", "-f", "-", input=printed)
