"""An Experiment's life after it starts: suspend and resume, a budget raised
after the end, and the spec fields that may and may not change (issue 5, item 7).

Same setting as test_operator.py: the real operator process, kwok pods that end
on schedule, a Reporter thread playing the collector.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from clusterlib import KubeCluster
from operatorlib import Cluster, OperatorProcess, Reporter, condition, experiment

pytestmark = pytest.mark.cluster


def curve(trial: dict[str, Any]) -> list[tuple[int, dict[str, float]]]:
    x = float(trial["spec"]["parameters"]["x"])
    return [(1, {"loss": x + 1.0}), (2, {"loss": x})]


def phases(kube: Cluster, name: str) -> dict[str, str | None]:
    return {t["metadata"]["name"]: (t.get("status") or {}).get("phase") for t in kube.trials(name)}


def running_trials(kube: Cluster, name: str) -> list[str]:
    return [t for t, p in phases(kube, name).items() if p == "Running"]


def test_suspend_lets_running_trials_finish_and_resume_continues(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    name = "drain"
    kube.create(experiment(name, max_trials=4, parallelism=2, run_seconds="4"))
    with Reporter(cluster, namespace, operator.port, curve) as reporter:
        kube.until(lambda: len(running_trials(kube, name)) == 2, 40, "two trials running")
        kube.patch_experiment(name, {"spec": {"suspend": True}})
        kube.until(lambda: kube.phase(name) == "Suspended", 20, "phase Suspended")
        # The default policy (Finish): both running trials end on their own ...
        kube.until(
            lambda: sorted(phases(kube, name).values()) == ["Succeeded", "Succeeded"],
            40,
            "the two running trials to succeed while suspended",
        )
        # ... and nothing new starts while the experiment stays suspended: a suspended
        # experiment is still resynced, so wait until the operator has looked again.
        operator.wait_reconciles()
        kube.check(len(kube.trials(name)) == 2, "a trial started while suspended")
        status = kube.experiment(name)["status"]
        suspended = condition(status, "Suspended")
        kube.check(suspended and suspended["status"] == "True", f"conditions: {status}")

        kube.patch_experiment(name, {"spec": {"suspend": False}})
        done = kube.until(lambda: kube.finished(name), 60, "the resumed experiment to finish")
    kube.check(not reporter.errors, f"reporter errors: {reporter.errors}")
    kube.check(done["phase"] == "Succeeded", f"status: {done}")
    trials = kube.trials(name)
    kube.check(len(trials) == 4, f"{len(trials)} trials; maxTrials is 4")
    kube.check(
        all(t["spec"].get("attempt", 0) == 0 for t in trials), "a trial was retried after resume"
    )
    suspended = condition(done, "Suspended")
    kube.check(suspended and suspended["status"] == "False", f"conditions: {done}")


def test_suspend_with_pause_suspends_running_jobs_and_resume_restarts_them(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    name = "pause"
    kube.create(experiment(name, max_trials=3, parallelism=2, run_seconds="6"))
    with Reporter(cluster, namespace, operator.port, curve) as reporter:
        kube.until(lambda: len(running_trials(kube, name)) == 2, 40, "two trials running")
        paused = set(running_trials(kube, name))
        kube.patch_experiment(name, {"spec": {"suspend": True, "suspendPolicy": "Pause"}})

        def all_paused() -> bool:
            jobs = [
                j for j in kube.jobs(name) if j.metadata.labels["trialforge.io/trial"] in paused
            ]
            return len(jobs) == 2 and all(j.spec.suspend for j in jobs)

        kube.until(all_paused, 30, "the running trials' Jobs to be suspended")
        kube.until(lambda: not [p for p in kube.pods(name) if not p.metadata.deletion_timestamp],
                   30, "the paused trials' pods to be gone")  # fmt: skip
        kube.until(
            lambda: all(
                (kube.trial(t).get("status") or {}).get("reason") == "Paused" for t in paused
            ),
            30,
            "the paused trials to say Paused",
        )
        for t in paused:
            st = kube.trial(t)["status"]
            kube.check(st["phase"] == "Pending", f"{t} is {st['phase']} while paused")
        kube.check(kube.phase(name) == "Suspended", "the experiment is not Suspended")
        kube.check(len(kube.events("TrialPaused")) >= 2, "no TrialPaused events")
        operator.wait_reconciles()  # it looks again (resync): still nothing starts
        kube.check(len(kube.trials(name)) == 2, "a trial started while paused")

        kube.patch_experiment(name, {"spec": {"suspend": False}})
        kube.until(lambda: all(not j.spec.suspend for j in kube.jobs(name)), 30, "Jobs unsuspended")
        done = kube.until(lambda: kube.finished(name), 90, "the resumed experiment to finish")
    kube.check(not reporter.errors, f"reporter errors: {reporter.errors}")
    kube.check(done["phase"] == "Succeeded", f"status: {done}")
    trials = kube.trials(name)
    kube.check(len(trials) == 3, f"{len(trials)} trials; maxTrials is 3")
    kube.check(
        all((t.get("status") or {}).get("phase") == "Succeeded" for t in trials),
        f"phases: {phases(kube, name)}",
    )
    kube.check(
        all(t["spec"].get("attempt", 0) == 0 for t in trials),
        "a paused trial came back as a new attempt instead of resuming its Job",
    )
    kube.check(len(kube.events("TrialResumed")) >= 2, "no TrialResumed events")


def test_a_finished_experiment_resumes_when_its_budget_is_raised(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    name = "more"
    kube.create(experiment(name, max_trials=2, parallelism=2, run_seconds="1"))
    with Reporter(cluster, namespace, operator.port, curve) as reporter:
        first = kube.until(lambda: kube.finished(name), 60, "the first two trials")
        kube.check(first["phase"] == "Succeeded", f"status: {first}")
        kube.check(first["reason"] == "BudgetExhausted", f"status: {first}")
        before = {t["metadata"]["name"]: t["metadata"]["uid"] for t in kube.trials(name)}

        kube.patch_experiment(name, {"spec": {"budget": {"maxTrials": 5, "parallelism": 3}}})
        kube.until(lambda: len(kube.trials(name)) > 2, 30, "new trials after the budget grew")
        kube.until(lambda: len(kube.events("Resumed")) >= 1, 30, "a Resumed event")
        done = kube.until(
            lambda: (s := kube.finished(name)) and s["trials"]["total"] == 5 and s,
            90,
            "the experiment to finish again with 5 trials",
        )
    kube.check(not reporter.errors, f"reporter errors: {reporter.errors}")
    kube.check(done["phase"] == "Succeeded" and done["reason"] == "BudgetExhausted", f"{done}")
    kube.check(done["completionTime"] > first["completionTime"], "completionTime did not move on")
    after = {t["metadata"]["name"]: t["metadata"]["uid"] for t in kube.trials(name)}
    kube.check(len(after) == 5, f"trials: {sorted(after)}")
    kube.check(
        all(after[n] == uid for n, uid in before.items()), "the first trials were re-created"
    )
    obj = kube.experiment(name)
    kube.check(
        done["observedGeneration"] == obj["metadata"]["generation"],
        f"observedGeneration {done['observedGeneration']} != {obj['metadata']['generation']}",
    )


def _refused(kube: Cluster, name: str, patch: dict[str, Any]) -> str:
    proc = kube.c.kubectl(
        "-n", kube.ns, "patch", "experiment", name, "--type=merge", "-p", json.dumps(patch),
        check=False,
    )  # fmt: skip
    kube.check(proc.returncode != 0, f"the apiserver accepted {patch}")
    return proc.stderr


def test_the_apiserver_keeps_what_defines_the_experiment_immutable(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    name = "fixed"
    kube.create(experiment(name, max_trials=3, parallelism=1, run_seconds="30"))
    kube.until(lambda: kube.trials(name), 30, "a first trial")
    err = _refused(
        kube, name, {"spec": {"parameters": [{"name": "x", "type": "float", "min": 0, "max": 2}]}}
    )
    kube.check("cannot change once the experiment exists" in err, err)
    err = _refused(kube, name, {"spec": {"search": {"algorithm": "tpe", "seed": 1}}})
    kube.check("cannot change once the experiment exists" in err, err)
    err = _refused(kube, name, {"spec": {"objective": {"metric": "acc", "direction": "maximize"}}})
    kube.check("cannot change once the experiment exists" in err, err)
    # What may change does: the budget, suspend, the policy.
    kube.patch_experiment(
        name, {"spec": {"budget": {"maxTrials": 4, "parallelism": 2}, "suspendPolicy": "Pause"}}
    )
    spec = kube.experiment(name)["spec"]
    kube.check(spec["budget"]["maxTrials"] == 4 and spec["suspendPolicy"] == "Pause", f"{spec}")
