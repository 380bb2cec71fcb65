"""Kueue, as the operator sees it: a trial's Job, its Workload, and what the Workload says.

Kueue (``sigs.k8s.io/kueue``) makes one Workload per queued Job (owned by the
Job, labelled with the Job's uid) and admits it by unsuspending the Job. Here:
which Workload belongs to which Job, Kueue's own reason while a Job waits, an
eviction or preemption of a Job that was admitted, and the patch that pauses a
queued trial (a deactivated Workload: Kueue suspends the Job and keeps it
suspended, where a suspend of ours would be undone by Kueue's next admission).
Plain dicts in, plain values out: the reads and writes are in kube/client.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

GROUP = "kueue.x-k8s.io"
VERSION = "v1beta2"
WORKLOADS = "workloads"
JOB_UID_LABEL = f"{GROUP}/job-uid"

# Workload condition types and the Evicted reasons (apis/kueue/v1beta2/workload_types.go)
QUOTA_RESERVED = "QuotaReserved"
ADMITTED = "Admitted"
EVICTED = "Evicted"
PREEMPTED = "Preempted"
DEACTIVATED = "Deactivated"  # Evicted because spec.active is false (our Pause, or a person)


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {
        str(c.get("type")): c
        for c in (obj.get("status") or {}).get("conditions") or []
        if isinstance(c, Mapping)
    }


def workloads_by_job(workloads: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Workloads by the uid of the Job that owns them."""
    out: dict[str, Mapping[str, Any]] = {}
    for wl in workloads:
        meta = wl.get("metadata") or {}
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == "Job" and ref.get("uid"):
                out[str(ref["uid"])] = wl
                break
        else:
            uid = (meta.get("labels") or {}).get(JOB_UID_LABEL)
            if uid:
                out[str(uid)] = wl
    return out


def admitted(workload: Mapping[str, Any] | None) -> bool:
    cond = _conditions(workload or {}).get(ADMITTED)
    return bool(cond) and cond.get("status") == "True"


def waiting_message(workload: Mapping[str, Any] | None) -> str:
    """Why Kueue has not admitted the Job yet, in Kueue's own words."""
    if workload is None:
        return "the Job waits for Kueue (no Workload yet: is Kueue running?)"
    if not (workload.get("spec") or {}).get("active", True):
        return "the Job waits for Kueue: its Workload is deactivated (spec.active is false)"
    conds = _conditions(workload)
    for kind in (QUOTA_RESERVED, ADMITTED):
        cond = conds.get(kind)
        if cond and cond.get("status") != "True" and cond.get("message"):
            reason = cond.get("reason") or kind
            return f"Kueue: {reason}: {cond['message']}"
    queue = (workload.get("spec") or {}).get("queueName")
    return f"the Job waits for Kueue in LocalQueue {queue}" if queue else "the Job waits for Kueue"


def kueue_disruption(workload: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(reason, message) when Kueue took an admitted Job back: preempted by a
    higher-priority or reclaiming workload, or evicted (PodsReadyTimeout, a stopped
    queue, node failures, ...). None when nothing happened, or when the eviction is
    a deactivation (spec.active false: a pause, not a disruption).

    This is the Kubernetes side of "a Kueue eviction or preemption is a disruption":
    the engine's disruption rule is what must count it."""
    if workload is None:
        return None
    conds = _conditions(workload)
    evicted = conds.get(EVICTED)
    preempted = conds.get(PREEMPTED)
    if evicted and evicted.get("status") == "True":
        reason = str(evicted.get("reason") or EVICTED)
        if reason == DEACTIVATED:
            return None
        kind = "Preempted" if reason == PREEMPTED else "Evicted"
        return kind, f"Kueue: {reason}: {evicted.get('message') or ''}".rstrip(": ")
    if preempted and preempted.get("status") == "True":
        return "Preempted", f"Kueue: {preempted.get('reason') or PREEMPTED}: " + str(
            preempted.get("message") or ""
        )
    return None


def active_patch(active: bool) -> dict[str, Any]:
    """The merge patch that deactivates (pause) or reactivates (resume) a Workload."""
    return {"spec": {"active": active}}


__all__ = [
    "JOB_UID_LABEL",
    "WORKLOADS",
    "active_patch",
    "admitted",
    "kueue_disruption",
    "waiting_message",
    "workloads_by_job",
]
