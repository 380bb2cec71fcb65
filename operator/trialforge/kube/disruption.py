"""Disruptions as Kubernetes shows them, read into engine.disruption's terms.

The rule (what a disruption does to a trial) is engine.disruption's; this
module only reads the evidence:

* a pod's ``DisruptionTarget`` condition, which the control plane adds before
  it ends a pod for a reason outside it (:data:`POD_REASONS`);
* a Kueue Workload's ``Evicted`` condition (:data:`KUEUE_REASONS`), for the
  Kueue integration to hand to :func:`trialforge.engine.disruption.disrupted`
  the same way (:func:`kueue_disruption`);
* the node a disrupted pod ran on, when it can be read: an eviction from a
  cordoned node is a drain, a node that is gone or tainted unreachable/not-ready
  is a lost node.

The Job of a trial ignores such pods (``podFailurePolicy``: DisruptionTarget ->
Ignore, kube/jobs.py): the Job controller replaces the pod without counting a
failure, and the operator counts the disruption and lets the engine say
whether the trial may go on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trialforge.engine.disruption import Disruption, Reason
from trialforge.engine.record import timestamp

DISRUPTION_TARGET = "DisruptionTarget"

# DisruptionTarget reasons (k8s.io/api/core/v1 and the controllers that set them).
POD_REASONS: dict[str, Reason] = {
    "PreemptionByScheduler": Reason.PREEMPTED,
    "PreemptionByKubeScheduler": Reason.PREEMPTED,  # before Kubernetes 1.27
    "EvictionByEvictionAPI": Reason.EVICTED,  # or Drained, on a cordoned node
    "DeletionByTaintManager": Reason.NODE_LOST,  # a NoExecute taint: unreachable, not-ready
    "DeletionByPodGC": Reason.NODE_LOST,  # its node was deleted
    "TerminationByKubelet": Reason.EVICTED,  # node pressure, a graceful node shutdown
}

_POD_WORDS: dict[str, str] = {
    "PreemptionByScheduler": "preempted by the scheduler for a pod of higher priority",
    "PreemptionByKubeScheduler": "preempted by the scheduler for a pod of higher priority",
    "EvictionByEvictionAPI": "evicted through the Eviction API",
    "DeletionByTaintManager": "evicted from its node by a NoExecute taint",
    "DeletionByPodGC": "its node is gone (the pod garbage collector removed it)",
    "TerminationByKubelet": "ended by the kubelet (node pressure or a node shutdown)",
}

# A Kueue Workload's Evicted condition reasons (sigs.k8s.io/kueue apis/kueue/v1beta1).
KUEUE_REASONS: dict[str, Reason] = {
    "Preempted": Reason.PREEMPTED,
    "PodsReadyTimeout": Reason.EVICTED,
    "AdmissionCheck": Reason.EVICTED,
    "ClusterQueueStopped": Reason.EVICTED,
    "LocalQueueStopped": Reason.EVICTED,
    "InactiveWorkload": Reason.EVICTED,
    "Deactivated": Reason.EVICTED,
    "NodeFailures": Reason.NODE_LOST,
}

_LOST_TAINTS = frozenset({"node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"})


def disruption_condition(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod's DisruptionTarget condition when it is True, else None."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == DISRUPTION_TARGET and c.get("status") == "True":
            return c
    return None


def is_disrupted(pod: Mapping[str, Any]) -> bool:
    return disruption_condition(pod) is not None


def pod_disruption(
    pod: Mapping[str, Any],
    nodes: Mapping[str, Mapping[str, Any] | None] | None = None,
    gpus: float = 0.0,
    now: float | None = None,
) -> Disruption | None:
    """The disruption that ends ``pod`` (None: it is not disrupted).

    ``nodes`` maps a node name to the Node (None: it is gone), for the ones
    that were read; ``gpus`` is what the pod holds, for the run's GPU seconds.
    """
    cond = disruption_condition(pod)
    if cond is None:
        return None
    source = str(cond.get("reason") or "")
    reason = POD_REASONS.get(source, Reason.EVICTED)
    node_name = (pod.get("spec") or {}).get("nodeName")
    words = _POD_WORDS.get(source, f"disrupted ({source or 'no reason given'})")
    known = nodes is not None and node_name in nodes
    node = nodes.get(node_name) if nodes is not None and node_name else None
    if reason == Reason.EVICTED and source == "EvictionByEvictionAPI" and node is not None:
        if (node.get("spec") or {}).get("unschedulable"):
            reason, words = Reason.DRAINED, "evicted from its cordoned node (a drain)"
    elif reason == Reason.NODE_LOST and known and node is None:
        words = f"its node {node_name} is gone"
    elif source == "DeletionByTaintManager" and node is not None:
        taints = {t.get("key") for t in (node.get("spec") or {}).get("taints") or []}
        if not taints & _LOST_TAINTS:
            reason = Reason.EVICTED  # a NoExecute taint someone put on a healthy node
    message = f"pod {pod['metadata']['name']} on {node_name or 'no node'}: {words}"
    detail = str(cond.get("message") or "").strip()
    if detail:
        message += f" ({detail})"
    return Disruption(
        reason, message, pod["metadata"]["name"], node_name, _run_gpu_seconds(pod, gpus, now)
    )


def _run_gpu_seconds(pod: Mapping[str, Any], gpus: float, now: float | None) -> float | None:
    """The pod's GPU seconds from its start to its end (or ``now``, or the condition)."""
    if not gpus:
        return None
    began = timestamp((pod.get("status") or {}).get("startTime"))
    if began is None:
        return None
    ended = None
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        finished = ((cs.get("state") or {}).get("terminated") or {}).get("finishedAt")
        if finished:
            ended = max(ended or 0.0, timestamp(finished) or 0.0)
    if ended is None:
        cond = disruption_condition(pod) or {}
        ended = timestamp(cond.get("lastTransitionTime")) or now
    if ended is None:
        return None
    return round(gpus * max(0.0, ended - began), 3)


def kueue_disruption(condition: Mapping[str, Any], run: str) -> Disruption | None:
    """A Kueue Workload's ``Evicted`` condition as a disruption of the run ``run``
    (None when it is not True); its reason maps by :data:`KUEUE_REASONS`."""
    if condition.get("type") != "Evicted" or condition.get("status") != "True":
        return None
    source = str(condition.get("reason") or "")
    reason = KUEUE_REASONS.get(source, Reason.EVICTED)
    message = f"Kueue evicted the workload ({source or 'no reason given'})"
    detail = str(condition.get("message") or "").strip()
    if detail:
        message += f": {detail}"
    return Disruption(reason, message, run)


def node_not_ready(node: Mapping[str, Any] | None) -> str | None:
    """Why a node cannot run its pods now (gone, NotReady, unreachable), else None."""
    if node is None:
        return "is gone"
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") != "True":
            reason = c.get("reason") or ("NotReady" if c.get("status") == "False" else "Unknown")
            return f"is not ready ({reason})"
    return None
