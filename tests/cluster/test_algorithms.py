"""Every search and early-stopping algorithm offered works where it is offered (issue 17,
item 5), against the real API server and the real operator on kwok nodes.

- `gp` needs PyTorch, which the operator image does not include: the CRD refuses it,
  naming the field and the reason (api/vocabulary.py NEEDS_OPTIONAL_PACKAGE).
- A spec the operator cannot plan (a setting Optuna checks only once it samples) gets a
  SpecValid=False condition with reason CannotPlan and a CannotPlan Event, not just a log
  line, and what already ran is kept.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from clusterlib import KubeCluster
from operatorlib import Cluster, OperatorProcess, Reporter, condition, experiment

from trialforge.api import vocabulary

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("algorithm", sorted(vocabulary.NEEDS_OPTIONAL_PACKAGE))
def test_the_api_server_refuses_an_algorithm_the_operator_image_cannot_run(
    cluster: KubeCluster, namespace: str, algorithm: str
) -> None:
    xp = experiment("needs-a-package", search={"algorithm": algorithm, "seed": 1})
    done = cluster.kubectl(
        "-n", namespace, "create", "-f", "-", check=False, input=json.dumps(xp)
    )  # fmt: skip
    assert done.returncode != 0, done.stdout
    assert "spec.search.algorithm" in done.stderr, done.stderr
    assert vocabulary.missing_package_reason(algorithm, on_cluster=True) in done.stderr
    # The same spec with an algorithm the image runs is stored.
    ok = experiment("needs-a-package", search={"algorithm": "tpe", "seed": 1})
    cluster.kubectl("-n", namespace, "create", "--dry-run=server", "-f", "-", input=json.dumps(ok))


def cannot_plan(kube: Cluster, name: str) -> dict[str, Any] | None:
    c = condition((kube.experiment(name) or {}).get("status") or {}, "SpecValid")
    return c if c and c["status"] == "False" else None


def test_an_experiment_the_operator_cannot_plan_gets_a_condition_and_an_event(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    # TPE with no start-up trials models the first suggestion at once, and only then
    # does Optuna refuse the negative priorWeight: the API server and validation accept it.
    name = "cannot-plan"
    kube.create(
        experiment(name, search={"algorithm": "tpe", "seed": 1,
                                 "settings": {"nStartupTrials": 0, "priorWeight": -1.0}})
    )  # fmt: skip
    c = kube.until(lambda: cannot_plan(kube, name), 60, "SpecValid=False")
    kube.check(c["reason"] == "CannotPlan", f"condition {c}")
    kube.check("spec.search" in c["message"] and "prior_weight" in c["message"], f"condition {c}")
    status = kube.experiment(name)["status"]
    kube.check((status["phase"], status["reason"]) == ("Pending", "CannotPlan"), f"{status}")
    events = [e for e in kube.events("CannotPlan") if e.involved_object.name == name]
    kube.check(events and events[0].type == "Warning", f"no CannotPlan Event: {events}")
    kube.check("prior_weight" in events[0].message, events[0].message)
    kube.check(kube.trials(name) == [], "a trial was created for a spec that cannot be planned")
    # Said once, not once per reconcile: the operator goes on reconciling, the Event count
    # and the condition stay as they are.
    operator.wait_reconciles(2)
    again = [e for e in kube.events("CannotPlan") if e.involved_object.name == name]
    kube.check(sum(e.count or 1 for e in again) == 1, f"events {again}")


def test_a_sampler_that_fails_mid_run_keeps_what_ran(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    # One start-up trial (drawn at random) runs and succeeds; the second suggestion is
    # TPE's own, which Optuna refuses.
    name = "fails-mid-run"
    kube.create(
        experiment(name, max_trials=3, run_seconds="2",
                   search={"algorithm": "tpe", "seed": 1,
                           "settings": {"nStartupTrials": 1, "priorWeight": -1.0}})
    )  # fmt: skip

    def curve(trial: dict[str, Any]) -> list[tuple[int, dict[str, float]]]:
        return [(1, {"loss": 0.5}), (2, {"loss": 0.4})]

    with Reporter(cluster, namespace, operator.port, curve) as reporter:
        c = kube.until(lambda: cannot_plan(kube, name), 90, "SpecValid=False")
    kube.check(not reporter.errors, f"reporter errors: {reporter.errors}")
    kube.check(c["reason"] == "CannotPlan" and "trial 1" in c["message"], f"condition {c}")
    trials = kube.trials(name)
    kube.check([t["metadata"]["name"] for t in trials] == [f"{name}-0"], f"trials {trials}")
    kube.until(
        lambda: (kube.trial(f"{name}-0").get("status") or {}).get("phase") == "Succeeded",
        60,
        "the first trial to stay and succeed",
    )
    kube.check(kube.trial(f"{name}-0")["status"].get("objective") == 0.4, "its objective")
    events = [e for e in kube.events("CannotPlan") if e.involved_object.name == name]
    kube.check(len(events) == 1, f"events {events}")
