"""kube/disruption.py and its use in kube/observe.py, kube/cache.py, kube/jobs.py (issue 22).

A pod's DisruptionTarget condition read into engine.disruption's terms; the
trial it ended counted and run again, never failed.  The cluster decides the
condition itself: tests/cluster/test_disruption.py evicts pods and deletes
nodes on the real control plane.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_kube_cache import Clock
from tests.unit.test_kube_jobs import T0, T1, job_with, pod_with, running_trial, xp
from trialforge.engine.disruption import Reason
from trialforge.kube.cache import TOMBSTONE_SECONDS, WorldCache
from trialforge.kube.disruption import kueue_disruption, node_not_ready, pod_disruption
from trialforge.kube.observe import trial_status_from

T_EVICT = "2026-01-01T10:00:10Z"  # 10 s after T0


def disrupted_pod(
    reason: str = "EvictionByEvictionAPI", name: str = "mnist-3-aaa", node: str = "gpu-1"
) -> dict[str, Any]:
    pod = pod_with("Failed", 143, "Error", node=node)
    pod["metadata"]["name"] = name
    pod["status"]["startTime"] = T0
    pod["status"]["conditions"] = [
        {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": reason,
            "message": "Eviction API: evicting",
            "lastTransitionTime": T_EVICT,
        }
    ]
    del pod["status"]["containerStatuses"][0]["state"]["terminated"]["reason"]
    return pod


def replacement(phase: str = "Running") -> dict[str, Any]:
    pod = pod_with(phase, 0 if phase == "Succeeded" else None, node="gpu-2")
    pod["metadata"].update(name="mnist-3-bbb", creationTimestamp=T_EVICT)
    pod["status"]["startTime"] = T_EVICT
    return pod


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("PreemptionByScheduler", Reason.PREEMPTED),
        ("EvictionByEvictionAPI", Reason.EVICTED),
        ("DeletionByTaintManager", Reason.NODE_LOST),
        ("DeletionByPodGC", Reason.NODE_LOST),
        ("TerminationByKubelet", Reason.EVICTED),
        ("SomethingNew", Reason.EVICTED),
    ],
)
def test_each_disruption_target_reason_maps_onto_the_engine_s(source: str, reason: Reason) -> None:
    found = pod_disruption(disrupted_pod(source), gpus=2, now=None)
    assert found is not None
    assert found.reason == reason
    assert found.run == "mnist-3-aaa" and found.node == "gpu-1"
    assert found.gpu_seconds == 20.0  # 2 GPUs from T0 to the condition, 10 s


def test_the_node_tells_a_drain_a_lost_node_and_a_tainted_healthy_node() -> None:
    cordoned = {"spec": {"unschedulable": True}}
    assert pod_disruption(disrupted_pod(), {"gpu-1": cordoned}).reason == Reason.DRAINED
    gone = pod_disruption(disrupted_pod("DeletionByPodGC"), {"gpu-1": None})
    assert gone.reason == Reason.NODE_LOST and "gpu-1 is gone" in gone.message
    healthy = {"spec": {"taints": [{"key": "maintenance", "effect": "NoExecute"}]}}
    tainted = pod_disruption(disrupted_pod("DeletionByTaintManager"), {"gpu-1": healthy})
    assert tainted.reason == Reason.EVICTED
    lost = {"spec": {"taints": [{"key": "node.kubernetes.io/unreachable"}]}}
    unreachable = pod_disruption(disrupted_pod("DeletionByTaintManager"), {"gpu-1": lost})
    assert unreachable.reason == Reason.NODE_LOST


def test_a_pod_without_the_condition_is_no_disruption() -> None:
    assert pod_disruption(pod_with("Failed", 1, "Error")) is None
    pod = disrupted_pod()
    pod["status"]["conditions"][0]["status"] = "False"
    assert pod_disruption(pod) is None


def test_kueue_evictions_map_onto_the_same_reasons() -> None:
    cond = {"type": "Evicted", "status": "True", "reason": "Preempted", "message": "by wl-b"}
    found = kueue_disruption(cond, "job-uid-1")
    assert found.reason == Reason.PREEMPTED and "by wl-b" in found.message
    assert kueue_disruption({**cond, "status": "False"}, "x") is None


def test_node_readiness() -> None:
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    lost = {"status": {"conditions": [{"type": "Ready", "status": "Unknown",
                                        "reason": "NodeStatusUnknown"}]}}  # fmt: skip
    assert node_not_ready(ready) is None
    assert node_not_ready(lost) == "is not ready (NodeStatusUnknown)"
    assert node_not_ready(None) == "is gone"


def test_an_evicted_pod_puts_the_trial_back_to_pending_counted_apart() -> None:
    spec = xp().spec
    trial = running_trial([(1, 0.5)])
    observed = trial_status_from(spec, trial, job_with(), [disrupted_pod()], now=1e9)
    s = observed.status
    assert (s["phase"], s["reason"], s["disruptions"]) == ("Pending", "Evicted", 1)
    assert s["disruptionHistory"][0]["run"] == "mnist-3-aaa"
    assert s["gpuSeconds"] == 20.0
    assert observed.event[1] == "TrialDisrupted"
    # Seen again (the pod lingers, or the cache's tombstone): nothing more to write.
    trial["status"].update(s)
    assert trial_status_from(spec, trial, job_with(), [disrupted_pod()], now=1e9).status == {}


def test_the_replacement_pod_runs_and_concludes_the_trial_with_all_its_gpu_time() -> None:
    spec = xp().spec
    trial = running_trial([(1, 0.5), (2, 0.25)])
    running = trial_status_from(spec, trial, job_with(), [disrupted_pod(), replacement()], now=1e9)
    s = running.status
    assert (s["phase"], s["disruptions"], s["node"]) == ("Running", 1, "gpu-2")
    trial["status"].update(s)
    done = trial_status_from(
        spec, trial, job_with({"type": "Complete"}), [disrupted_pod(), replacement("Succeeded")]
    ).status
    assert done["phase"] == "Succeeded" and done["exitCode"] == 0  # not the evicted pod's 143
    # 2 GPUs: 10 s before the eviction + the new run from T_EVICT to T1 (the Job's end).
    assert T1 == "2026-01-01T10:00:30Z"
    assert done["gpuSeconds"] == 20.0 + 2 * 20


def test_past_max_disruptions_the_trial_fails_with_too_many_disruptions() -> None:
    base = xp().spec
    spec = base.model_copy(update={"trial": base.trial.model_copy(update={"max_disruptions": 1})})
    trial = running_trial()
    pods = [disrupted_pod(name="a"), disrupted_pod(name="b")]
    s = trial_status_from(spec, trial, job_with(), pods, now=1e9).status
    assert (s["phase"], s["reason"], s["disruptions"]) == ("Failed", "TooManyDisruptions", 2)
    assert s["retryable"] is False


def test_a_running_trial_on_a_node_that_is_not_ready_says_so() -> None:
    spec = xp().spec
    trial = running_trial()
    pod = pod_with("Running")
    pod["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    lost = {"status": {"conditions": [{"type": "Ready", "status": "Unknown",
                                        "reason": "NodeStatusUnknown"}]}}  # fmt: skip
    observed = trial_status_from(spec, trial, job_with(), [pod], nodes={"gpu-1": lost})
    assert observed.status["reason"] == "NodeNotReady"
    assert "gpu-1 is not ready" in observed.status["message"]
    assert observed.event[1] == "TrialNodeNotReady"


def test_the_cache_keeps_a_deleted_disrupted_pod_for_the_reconcile() -> None:
    clock = Clock()
    cache = WorldCache(relist=1e9, clock=clock)
    cache.listed("pods", "ns", "xp", [])

    def labelled(pod: dict[str, Any]) -> dict[str, Any]:
        pod["metadata"].update(namespace="ns", labels={"trialforge.io/experiment": "xp"})
        return pod

    gone, plain = labelled(disrupted_pod()), labelled(pod_with("Failed", 1))
    plain["metadata"]["name"] = "other"
    for pod in (gone, plain):
        cache.seen("pods", "ADDED", pod)
        cache.seen("pods", "DELETED", pod)
    assert [p["metadata"]["name"] for p in cache.items("pods", "ns", "xp")] == ["mnist-3-aaa"]
    clock.now += TOMBSTONE_SECONDS + 1
    assert cache.items("pods", "ns", "xp") == []


def test_gpu_seconds_leave_out_the_time_a_trial_was_paused() -> None:
    """Paused at T0+10 s (the reconciler banked 2 GPUs x 10 s = 20), resumed at T0+20 s in
    a new pod: the conclusion adds the new run only, not the 10 s it waited."""
    spec = xp().spec
    trial = running_trial([(1, 0.5)])
    trial["status"]["gpuSeconds"] = 20.0
    pod = replacement("Succeeded")
    pod["status"]["startTime"] = pod["metadata"]["creationTimestamp"] = "2026-01-01T10:00:20Z"
    done = trial_status_from(spec, trial, job_with({"type": "Complete"}), [pod]).status
    assert done["phase"] == "Succeeded"
    assert done["gpuSeconds"] == 20.0 + 2 * 10  # T1 is T0 + 30 s
