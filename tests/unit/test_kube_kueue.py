"""kube/kueue.py: Workloads matched to Jobs, Kueue's reasons, evictions, the pause patch.

The Workloads are shaped as Kueue v0.17 writes them (kueue.x-k8s.io/v1beta2;
condition types and reasons from apis/kueue/v1beta2/workload_types.go).
"""

from __future__ import annotations

from typing import Any

from trialforge.kube.kueue import (
    JOB_UID_LABEL,
    active_patch,
    admitted,
    kueue_disruption,
    waiting_message,
    workloads_by_job,
)

PENDING_MSG = (
    "couldn't assign flavors to pod set main: insufficient unused quota for "
    "nvidia.com/gpu in flavor gpu, 1 more needed"
)


def workload(
    job_uid: str = "job-uid-1", *conditions: dict[str, Any], active: bool | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"queueName": "team-a", "podSets": [{"name": "main", "count": 1}]}
    if active is not None:
        spec["active"] = active
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "Workload",
        "metadata": {
            "name": f"job-mnist-3-{job_uid[-5:]}",
            "namespace": "ml",
            "labels": {JOB_UID_LABEL: job_uid},
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": "mnist-3", "uid": job_uid}
            ],
        },
        "spec": spec,
        "status": {"conditions": list(conditions)},
    }


def cond(kind: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def test_workloads_are_matched_to_their_jobs_by_owner_or_by_the_job_uid_label() -> None:
    owned = workload("uid-a")
    labelled = workload("uid-b")
    labelled["metadata"]["ownerReferences"] = []
    stray = workload("uid-c")
    stray["metadata"]["ownerReferences"] = []
    stray["metadata"]["labels"] = {}
    found = workloads_by_job([owned, labelled, stray])
    assert found == {"uid-a": owned, "uid-b": labelled}


def test_a_workload_without_quota_says_why_in_kueues_words() -> None:
    wl = workload("u", cond("QuotaReserved", "False", "Pending", PENDING_MSG))
    assert waiting_message(wl) == f"Kueue: Pending: {PENDING_MSG}"
    assert not admitted(wl)
    missing_queue = workload(
        "u", cond("QuotaReserved", "False", "Inadmissible", "LocalQueue team-a doesn't exist")
    )
    assert waiting_message(missing_queue) == (
        "Kueue: Inadmissible: LocalQueue team-a doesn't exist"
    )


def test_no_workload_or_no_condition_yet_still_says_what_it_waits_for() -> None:
    assert "no Workload yet" in waiting_message(None)
    assert waiting_message(workload("u")) == "the Job waits for Kueue in LocalQueue team-a"
    assert "deactivated" in waiting_message(workload("u", active=False))


def test_an_admitted_workload_is_admitted_and_not_disrupted() -> None:
    wl = workload(
        "u", cond("QuotaReserved", "True", "QuotaReserved"), cond("Admitted", "True", "Admitted")
    )
    assert admitted(wl)
    assert kueue_disruption(wl) is None
    assert kueue_disruption(None) is None


def test_preemption_and_eviction_are_disruptions_but_a_deactivation_is_not() -> None:
    preempted = workload(
        "u",
        cond("Evicted", "True", "Preempted", "Preempted to accommodate a workload (UID: x)"),
        cond("Preempted", "True", "InClusterQueue", "Preempted to accommodate a workload"),
    )
    reason, message = kueue_disruption(preempted) or ("", "")
    assert reason == "Preempted"
    assert message == "Kueue: Preempted: Preempted to accommodate a workload (UID: x)"
    timeout = workload("u", cond("Evicted", "True", "PodsReadyTimeout", "Exceeded the timeout"))
    assert kueue_disruption(timeout) == ("Evicted", "Kueue: PodsReadyTimeout: Exceeded the timeout")
    only_preempted = workload("u", cond("Preempted", "True", "InCohortReclamation", "reclaimed"))
    assert kueue_disruption(only_preempted) == (
        "Preempted",
        "Kueue: InCohortReclamation: reclaimed",
    )
    paused = workload(
        "u", cond("Evicted", "True", "Deactivated", "The workload is deactivated"), active=False
    )
    assert kueue_disruption(paused) is None
    over = workload("u", cond("Evicted", "False", "Preempted", "old news"))
    assert kueue_disruption(over) is None


def test_the_pause_patch_sets_spec_active() -> None:
    assert active_patch(False) == {"spec": {"active": False}}
    assert active_patch(True) == {"spec": {"active": True}}
