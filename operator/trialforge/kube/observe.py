"""Reading the world: a Trial's state from its Job and pods, as the cluster reports it."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trialforge.api.experiment import ExperimentSpec
from trialforge.api.status import TERMINAL_PHASES
from trialforge.engine.disruption import disrupted
from trialforge.engine.history import observations_from
from trialforge.engine.lineage import artifact_uri
from trialforge.engine.objective import conclude
from trialforge.engine.record import TrialRecord, rfc3339, timestamp
from trialforge.engine.status import outcome_status
from trialforge.kube import names
from trialforge.kube.disruption import is_disrupted, node_not_ready, pod_disruption
from trialforge.kube.kueue import kueue_disruption, waiting_message
from trialforge.metrics.contract import CHECKPOINT_METRIC

GPU = "nvidia.com/gpu"
GPU_PRODUCT = "nvidia.com/gpu.product"  # the NVIDIA GPU operator's node label


def now_iso() -> str:
    return rfc3339(time.time())  # type: ignore[return-value]


def _iso(value: Any) -> str | None:
    return rfc3339(timestamp(value))


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def _gpus(pod_spec: Mapping[str, Any]) -> float:
    total = 0.0
    for c in pod_spec.get("containers") or []:
        res = c.get("resources") or {}
        value = (res.get("limits") or {}).get(GPU) or (res.get("requests") or {}).get(GPU)
        if value is not None:
            total += float(value)
    return total


@dataclass(frozen=True)
class Observed:
    """What the Job and pods say about one trial attempt."""

    status: dict[str, Any]  # the fields to merge into Trial.status
    event: tuple[str, str, str] | None = None  # (type, reason, message) when the phase changed


def trial_status_from(
    spec: ExperimentSpec,
    trial: Mapping[str, Any],
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    gpu_types: Mapping[str, str] | None = None,
    workload: Mapping[str, Any] | None = None,
    nodes: Mapping[str, Mapping[str, Any] | None] | None = None,
    now: float | None = None,
) -> Observed:
    """The Trial status fields the Job and pods imply (the trial's phase and where it ran).

    With a queue, ``workload`` is the Job's Kueue Workload (None: none yet).  A pod a
    disruption ended (kube.disruption) is counted by engine.disruption's rule and
    plays no further part: the Job replaces it, and the trial's phase follows the
    pods that are left.  ``nodes`` holds the nodes that were read (None: gone), to
    tell a drain or a lost node and a node that is not ready.
    """
    status = dict(trial.get("status") or {})
    phase = status.get("phase", "Pending")
    name = trial["metadata"]["name"]
    if phase in TERMINAL_PHASES:
        return Observed({})
    counted, pods = _disruptions(spec, status, job, pods, nodes, now)
    if counted:
        status.update(counted)
        if counted.get("phase") in TERMINAL_PHASES:
            return Observed(counted, ("Warning", "TrialFailed", f"{name}: {counted['message']}"))
    observed = _observe_run(spec, status, name, job, pods, gpu_types, nodes, workload)
    if not counted:
        return observed
    event = observed.event or ("Warning", "TrialDisrupted", f"{name}: {counted['message']}")
    return Observed({**counted, **observed.status}, event)


def _disruptions(
    spec: ExperimentSpec,
    status: Mapping[str, Any],
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    nodes: Mapping[str, Mapping[str, Any] | None] | None,
    now: float | None,
) -> tuple[dict[str, Any], list[Mapping[str, Any]]]:
    """(the status fields of the disruptions not counted yet, the pods no disruption ended)."""
    gone = [p for p in pods if is_disrupted(p)]
    if not gone:
        return {}, list(pods)
    when = time.time() if now is None else now
    gpus = _gpus(((job or {}).get("spec") or {}).get("template", {}).get("spec", {}))
    work = dict(status)
    out: dict[str, Any] = {}
    for pod in sorted(gone, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
        found = pod_disruption(pod, nodes, gpus, when)
        if found is None:
            continue
        change = disrupted(spec, work, found, when)
        work.update(change)
        out.update(change)
        if out.get("phase") in TERMINAL_PHASES:
            break
    return out, [p for p in pods if not is_disrupted(p)]


def _observe_run(
    spec: ExperimentSpec,
    status: Mapping[str, Any],
    name: str,
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    gpu_types: Mapping[str, str] | None,
    nodes: Mapping[str, Mapping[str, Any] | None] | None,
    workload: Mapping[str, Any] | None = None,
) -> Observed:
    """The status fields the Job and the trial's (undisrupted) pods imply."""
    out: dict[str, Any] = {}
    pod = _main_pod(pods)
    if pod is not None:
        out.update(_where(pod, gpu_types))
    if job is None:
        # No Job yet (it is created right after the Trial): nothing worth a write;
        # a Trial without a phase reads as Pending.
        return Observed(out)
    jstatus = job.get("status") or {}
    start = jstatus.get("startTime")
    if start and not status.get("startTime"):
        out["startTime"] = _iso(start)
    complete = _condition(job, "Complete")
    failed = _condition(job, "Failed")
    if complete or failed:
        out.update(_concluded(spec, status, out, job, pods, complete, failed))
        kind = "Normal" if out["phase"] == "Succeeded" else "Warning"
        return Observed(out, (kind, f"Trial{out['phase']}", f"{name}: {out['message']}"))
    if (job.get("spec") or {}).get("suspend"):
        if (job["metadata"].get("annotations") or {}).get(names.ANNOTATION_PAUSED):
            out.update(
                phase="Pending",
                reason="Paused",
                message="the experiment is suspended with suspendPolicy Pause",
            )
        elif spec.queue:
            # Kueue's own words: why it has not admitted the Job (yet), or that it
            # took an admitted Job back (preempted, evicted) and it waits again.
            evicted = kueue_disruption(workload)
            message = evicted[1] if evicted else waiting_message(workload)
            out.update(phase="Pending", reason="WaitingForAdmission", message=message)
        else:
            out.update(
                phase="Pending", reason="WaitingForAdmission", message="the Job waits for Kueue"
            )
    elif pod is not None and (pod.get("status") or {}).get("phase") == "Running":
        out.update(phase="Running", reason="Running", message="")
        node = (pod.get("spec") or {}).get("nodeName")
        why = node_not_ready(nodes[node]) if nodes is not None and node in nodes else None
        if why is not None:
            out.update(
                reason="NodeNotReady",
                message=f"its node {node} {why}: Kubernetes evicts the pod once its "
                "toleration runs out, and the trial runs again (a disruption)",
            )
        if not status.get("startTime") and "startTime" not in out:
            # The Job's startTime can reach us after its pod runs: one write, not two.
            started = _iso((pod.get("status") or {}).get("startTime"))
            if started:
                out["startTime"] = started
    elif pod is not None and (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        # The pod has ended and the Job's verdict is on its way: the trial is not
        # "Starting" again; the conclusion comes with the Job's condition.
        pass
    elif pod is not None and (waiting := _waiting(pods)) is not None:
        reason, message = waiting
        if reason in PERMANENT_WAITING:
            # no retry of the pull mends it: the trial fails now, not at its timeout
            out.update(_concluded(spec, status, out, job, pods, None, {"reason": reason}))
            out["message"] = f"{out.get('message') or reason}: {message}"
            return Observed(out, ("Warning", "TrialFailed", f"{name}: {out['message']}"))
        out.update(phase="Pending", reason=reason, message=message)
    elif pod is not None:
        unschedulable = _unschedulable(pod)
        if unschedulable:
            out.update(phase="Pending", reason="Unschedulable", message=unschedulable)
        elif status.get("reason") not in (None, "Starting"):
            # Held before (Unschedulable, Paused, waiting for Kueue), now on its way.
            out.update(phase="Pending", reason="Starting", message="")
        else:
            # Scheduled and starting: worth no write of its own (one per trial at
            # scale); where it runs comes with the Running write.
            out.clear()
    # else: the Job waits for its pod to be created; nothing worth a write yet.
    checkpoint = ((status.get("metrics") or {}).get(CHECKPOINT_METRIC) or {}).get("latest")
    if checkpoint is not None and out.get("phase") not in TERMINAL_PHASES:
        out["checkpointStep"] = int(checkpoint)  # trialforge.report(..., checkpoint=True)
    changed = {k: v for k, v in out.items() if status.get(k) != v}
    if set(changed) <= {"startTime"}:
        changed = {}  # written with the next real change (Running, or the end)
    event = None
    if changed.get("phase") == "Running":
        event = ("Normal", "TrialStarted", f"{name} is running on {out.get('node', '?')}")
    elif changed.get("reason") == "Unschedulable":
        event = ("Warning", "TrialUnschedulable", f"{name}: {out['message']}")
    elif changed.get("reason") == "NodeNotReady":
        event = ("Warning", "TrialNodeNotReady", f"{name}: {out['message']}")
    return Observed(changed, event)


def _concluded(
    spec: ExperimentSpec,
    status: Mapping[str, Any],
    seen: Mapping[str, Any],
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    complete: Mapping[str, Any] | None,
    failed: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The status fields of a trial whose Job completed or failed: its outcome, end and cost."""
    jstatus = job.get("status") or {}
    out: dict[str, Any] = {}
    end = jstatus.get("completionTime") or (failed or {}).get("lastTransitionTime")
    out["completionTime"] = _iso(end) or now_iso()
    exit_code = _exit_code(pods)
    if exit_code is not None:
        out["exitCode"] = exit_code
    artifact = _artifact(pods)
    if artifact:
        out["artifactUri"] = artifact
    failure = None
    if failed:
        reason = failed.get("reason") or "Failed"
        if reason == "DeadlineExceeded":
            failure = "Timeout"
        else:
            # BackoffLimitExceeded (with backoffLimit 0) only says a pod failed:
            # the container's own reason (OOMKilled, ...) or its exit code says why.
            failure = _pod_reason(pods)
            if failure is None and not exit_code:
                failure = reason  # the Job failed and no container says why
    checkpoint = ((status.get("metrics") or {}).get(CHECKPOINT_METRIC) or {}).get("latest")
    if checkpoint is not None:
        out["checkpointStep"] = int(checkpoint)
    history = status.get("history") or {}
    outcome = conclude(spec, 0 if complete else exit_code, observations_from(history), failure)
    out.update(outcome_status(outcome))
    gpu = _gpus((job.get("spec") or {}).get("template", {}).get("spec", {}))
    began = run_start(pods, job) or timestamp(seen.get("startTime") or status.get("startTime"))
    ended = timestamp(out["completionTime"])
    if gpu and began and ended:
        workers = int((job.get("spec") or {}).get("parallelism") or 1)
        # The runs before this one (ended by disruptions, or paused) are in it already.
        before = float(status.get("gpuSeconds") or 0.0)
        out["gpuSeconds"] = round(before + gpu * workers * max(0.0, ended - began), 3)
    return out


def run_start(
    pods: Sequence[Mapping[str, Any]], job: Mapping[str, Any] | None = None
) -> float | None:
    """When the trial's current run began: its main pod's start, else the Job's (which
    Kubernetes sets again when a suspended Job resumes); None if neither is known."""
    pod = _main_pod(pods)
    began = timestamp(((pod or {}).get("status") or {}).get("startTime"))
    if began is None and job is not None:
        began = timestamp((job.get("status") or {}).get("startTime"))
    return began


def _main_pod(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    if not pods:
        return None

    def rank(p: Mapping[str, Any]) -> tuple[int, str]:
        index = (p.get("metadata", {}).get("annotations") or {}).get(
            "batch.kubernetes.io/job-completion-index", "0"
        )
        return (
            int(index) if str(index).isdigit() else 0,
            p["metadata"].get("creationTimestamp") or "",
        )

    # The newest pod of the lowest index that is not being deleted: a pod the
    # Job made again (after a pause, a disruption) is the one that runs now.
    newest = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
    return sorted(newest, key=lambda p: (rank(p)[0], bool(p["metadata"].get("deletionTimestamp"))))[
        0
    ]


def _where(pod: Mapping[str, Any], gpu_types: Mapping[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = (pod.get("spec") or {}).get("nodeName")
    if node and gpu_types and gpu_types.get(node):
        out["gpuType"] = gpu_types[node]  # the node's label; a nodeSelector below wins
    if node:
        out["node"] = node
    # The GPU model, when the pod asked for one by the GPU operator's node label.
    product = ((pod.get("spec") or {}).get("nodeSelector") or {}).get(GPU_PRODUCT)
    if product:
        out["gpuType"] = product
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        image_id = cs.get("imageID")
        if image_id:
            out["imageDigest"] = image_id.split("://", 1)[-1]
            break
    return out


def _terminated(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The terminated states of the pods' main containers, the main pod's first."""
    ordered = sorted(pods, key=lambda p: p is not _main_pod(pods))
    out = []
    for pod in ordered:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if term:
                out.append(term)
    return out


def _artifact(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """The artifact the trainer named in its termination message (engine.lineage)."""
    for term in _terminated(pods):
        found = artifact_uri(str(term.get("message") or "").splitlines())
        if found:
            return found
    return None


def _exit_code(pods: Sequence[Mapping[str, Any]]) -> int | None:
    """The trial's exit code: the first non-zero one of any worker, else 0 (None: unknown)."""
    codes = [int(t["exitCode"]) for t in _terminated(pods) if t.get("exitCode") is not None]
    if not codes:
        return None
    return next((c for c in codes if c != 0), 0)


def _pod_reason(pods: Sequence[Mapping[str, Any]]) -> str | None:
    for term in _terminated(pods):
        if term.get("reason") not in (None, "Completed", "Error"):
            return str(term["reason"])  # OOMKilled, ContainerCannotRun, ...
    return None


# A container that waits for one of these will never start: the image is not on the
# node and may not be pulled, or its name is not an image reference.
PERMANENT_WAITING = frozenset({"ErrImageNeverPull", "InvalidImageName"})
# Waiting reasons worth showing on a Pending Trial (the kubelet retries these).
SHOWN_WAITING = PERMANENT_WAITING | {
    "ErrImagePull",
    "ImagePullBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
}


def _waiting(pods: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) of a container the kubelet cannot start, if one is stuck."""
    for pod in pods:
        st = pod.get("status") or {}
        for cs in [*(st.get("initContainerStatuses") or []), *(st.get("containerStatuses") or [])]:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in SHOWN_WAITING:
                detail = waiting.get("message") or reason
                return str(reason), f"container {cs.get('name')}: {detail}"[:500]
    return None


def _unschedulable(pod: Mapping[str, Any]) -> str | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable":
            return str(c.get("message") or "no node can run it")
    return None


def trial_view(spec: ExperimentSpec, trial: Mapping[str, Any]) -> TrialRecord:
    return TrialRecord.from_resource(trial, spec.all_objectives[0].metric)
