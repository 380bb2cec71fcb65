"""Conditional parameters, constraints and warm starts on the real control plane
(issue 17, items 1-3).

The operator runs as a real subprocess, kwok plays the nodes, a Reporter thread
plays the metrics collector (as tests/cluster/test_operator.py does): every
Trial's parameters, feasibility and warm-start source are read back from the
API server, the Jobs' commands from the Jobs.
"""

from __future__ import annotations

from typing import Any

import pytest
from clusterlib import KubeCluster
from operatorlib import Cluster, OperatorProcess, Reporter, condition, experiment

pytestmark = pytest.mark.cluster

PARAMETERS = [
    {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
    {"name": "m", "type": "discrete", "values": [0.5, 0.9], "when": {"opt": ["sgd"]}},
    {"name": "x", "type": "float", "min": 0.0, "max": 1.0},
]
BOUND = 40.0  # latency_ms = 100 x: feasible while x <= 0.4


def curve(trial: dict[str, Any]) -> list[tuple[int, dict[str, float]]]:
    """Loss lowest at x = 0.6 (past the bound); latency 100 x; sgd a little worse."""
    p = trial["spec"]["parameters"]
    loss = round((float(p["x"]) - 0.6) ** 2 + (0.05 if p["opt"] == "sgd" else 0.0), 6)
    latency = round(100.0 * float(p["x"]), 6)
    return [
        (1, {"loss": loss + 0.1, "latency_ms": latency}),
        (2, {"loss": loss, "latency_ms": latency}),
    ]


def searched(name: str, parameters: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    xp = experiment(name, max_trials=spec.pop("max_trials", 4), parallelism=2, run_seconds="2",
                    parameters=parameters, search=spec.pop("search", None))  # fmt: skip
    xp["spec"]["trial"]["template"]["spec"]["containers"][0]["command"] = [
        "python", "train.py", "--x=${params.x}", "--m=${params.m}",
    ]  # fmt: skip
    xp["spec"].update(spec)
    return xp


def finished(kube: Cluster, name: str, timeout: float = 120) -> dict[str, Any]:
    return kube.until(lambda: kube.finished(name), timeout, f"experiment {name} to finish")


def test_a_conditional_constrained_warm_started_experiment(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    old = searched("old", [*PARAMETERS, {"name": "gone", "type": "int", "min": 1, "max": 3}])
    new = searched(
        "new", PARAMETERS, max_trials=6,
        search={"algorithm": "tpe", "seed": 3, "settings": {"nStartupTrials": 2}},
        constraints=[{"metric": "latency_ms", "max": BOUND}],
        initialPoints=[{"opt": "adam", "x": 0.25}],
        warmStart={"experiment": "old"},
    )  # fmt: skip
    with Reporter(cluster, namespace, operator.port, curve) as reporter:
        kube.create(old)
        before = finished(kube, "old")
        kube.check(before["phase"] == "Succeeded", f"old: {before}")
        kube.create(new)
        # Mid-run, the operator restarts: it rebuilds the same warm start and study.
        kube.until(lambda: len(kube.trials("new")) >= 3, 60, "a third trial of new")
        operator.kill()
        operator.start()
        status = finished(kube, "new")
    kube.check(not reporter.errors, f"reporter errors: {reporter.errors}")
    kube.check(status["phase"] == "Succeeded", f"status {status}")
    trials = sorted(kube.trials("new"), key=lambda t: t["spec"]["index"])
    kube.check(len(trials) == 6, f"{len(trials)} trials")

    # Only the active parameters: m exactly where opt is sgd; the Job's command has
    # --m= (empty) where m is inactive.
    commands = {
        j.metadata.name: " ".join(j.spec.template.spec.containers[0].command or [])
        + " " + " ".join(j.spec.template.spec.containers[0].args or [])
        for j in kube.jobs("new")
    }  # fmt: skip
    for t in trials:
        p = t["spec"]["parameters"]
        kube.check(("m" in p) == (p["opt"] == "sgd"), f"{t['metadata']['name']}: {p}")
        command = next(c for n, c in commands.items() if n.startswith(t["metadata"]["name"]))
        wanted = f"--m={p['m']!r}" if "m" in p else "--m= "
        kube.check(wanted in command + " ", f"{t['metadata']['name']}: {command}")
    kube.check(trials[0]["spec"]["parameters"] == {"opt": "adam", "x": 0.25}, "initial point")

    # Feasibility on every Trial; the best is the best feasible one.
    feasible = []
    for t in trials:
        st, x = t["status"], float(t["spec"]["parameters"]["x"])
        kube.check(st["constraints"]["latency_ms"] == pytest.approx(100 * x), f"{st}")
        kube.check(st["feasible"] is (100 * x <= BOUND), f"{t['metadata']['name']}: {st}")
        if st["feasible"]:
            feasible.append(t)
    kube.check(feasible, "no feasible trial")
    kube.check(status["trials"]["infeasible"] == len(trials) - len(feasible), f"{status}")
    best = min(feasible, key=lambda t: t["status"]["objective"])
    kube.check(status["best"]["trial"] == best["metadata"]["name"], f"best {status['best']}")

    # The warm start's source on every Trial, and the Events that say what was told.
    told = {t["spec"].get("warmStart") for t in trials}
    kube.check(told == {"experiment old: 4 trials, dropped parameters gone"}, f"{told}")
    kube.check(
        any("gone (not in this space)" in e.message for e in kube.events("WarmStartPartial")),
        "a WarmStartPartial Event naming the dropped parameter",
    )
    kube.check(kube.events("WarmStarted"), "a WarmStarted Event")


def test_what_only_the_operator_can_check_of_a_warm_start_is_refused_by_field(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    """A runDir (a local path) on a cluster, and a source Experiment that does not exist
    (yet): the API server cannot know either; the operator sets SpecValid=False and
    an Event naming the field, starts nothing, and goes on once the source exists."""
    kube.create(searched("local-dir", PARAMETERS, warmStart={"runDir": "runs/old"}))
    kube.create(searched("later", PARAMETERS, max_trials=2, warmStart={"experiment": "src"}))

    def refused(name: str) -> dict[str, Any] | None:
        c = condition((kube.experiment(name) or {}).get("status") or {}, "SpecValid")
        return c if c and c["status"] == "False" else None

    for name, field in (("local-dir", "spec.warmStart.runDir"),
                        ("later", "spec.warmStart.experiment")):  # fmt: skip
        c = kube.until(lambda n=name: refused(n), 60, f"SpecValid False on {name}")
        kube.check(c["reason"] == "InvalidSpec" and field in c["message"], f"{name}: {c}")
        # The Event follows the condition's write.
        kube.until(
            lambda n=name, f=field: [
                e for e in kube.events("InvalidSpec")
                if e.involved_object.name == n and f in e.message
            ],
            30, f"an InvalidSpec Event on {name} naming {field}",
        )  # fmt: skip
        kube.check(kube.trials(name) == [], f"{name} started trials")
    kube.check("no Experiment 'src'" in refused("later")["message"], "the message says why")

    with Reporter(cluster, namespace, operator.port, curve):
        kube.create(searched("src", PARAMETERS, max_trials=2))
        finished(kube, "src")
        status = finished(kube, "later")
    kube.check(status["phase"] == "Succeeded", f"later: {status}")
    spec_valid = condition(status, "SpecValid")
    kube.check(spec_valid is not None and spec_valid["status"] == "True", f"{spec_valid}")
    # What was told: src's trials that had completed when later started (src may still
    # have been running then; a restart tells the same ones).
    start = status["startTime"]
    ended = [t for t in kube.trials("src") if t["status"]["completionTime"] <= start]
    told = {t["spec"].get("warmStart") for t in kube.trials("later")}
    kube.check(told == {f"experiment src: {len(ended)} trials"}, f"{told}, started {start}")
    kube.check(kube.trials("local-dir") == [], "local-dir started trials")
