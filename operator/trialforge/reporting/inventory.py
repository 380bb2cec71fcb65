"""What ``trialforge list`` and ``trialforge status`` show: experiments, local or on a cluster.

A local run directory and a cluster Experiment give the same :class:`Summary`
(one line of ``list``) and :class:`Detail` (``status``): the status is the same
shape in both (engine.status writes it), so only where it is read differs.
Labels are ``metadata.labels`` and the description is the annotation
:data:`DESCRIPTION_ANNOTATION`, in the YAML locally as on a cluster.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trialforge.api.experiment import GROUP, Experiment
from trialforge.api.status import TERMINAL_PHASES
from trialforge.engine.record import timestamp
from trialforge.engine.status import ENDED_COUNTS, progress_of
from trialforge.kube.names import ANNOTATION_PAUSED, LABEL_TRIAL
from trialforge.local.rundir import RunDirectory

# The reasons the operator writes on a Trial that something holds back.
WRITTEN_HOLDS = frozenset({"Unschedulable", "WaitingForAdmission", "Paused"})

# A person's words about an experiment, shown by `trialforge list` and `status`.
DESCRIPTION_ANNOTATION = f"{GROUP}/description"


class NotFound(LookupError):
    """A run directory, experiment or trial that is not there (the message says which)."""


@dataclass
class Summary:
    """One experiment, as a line of ``trialforge list``."""

    name: str
    phase: str
    done: int
    max: int | None
    best: float | None
    best_trial: str | None
    objective: str | None
    started: float | None  # seconds since the epoch
    labels: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    namespace: str | None = None  # on a cluster
    run_dir: str | None = None  # locally
    live: bool | None = None  # locally: whether the process that runs it is alive
    reason: str | None = None

    @property
    def shown_phase(self) -> str:
        return f"{self.phase} (stale)" if self.live is False else self.phase

    def to_json(self, now: float) -> dict[str, Any]:
        out = {_camel(k): v for k, v in asdict(self).items()}
        out["ageSeconds"] = None if self.started is None else max(0.0, now - self.started)
        out["started"] = _iso(self.started)
        return out


@dataclass
class Detail:
    """One experiment in full, for ``trialforge status``."""

    summary: Summary
    counts: dict[str, int]
    conditions: list[dict[str, Any]]
    best: dict[str, Any] | None
    message: str | None
    holds: list[str]  # what holds trials back, in words
    trials: list[dict[str, Any]]  # name, phase, reason, message of each latest attempt

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            **self.summary.to_json(now),
            "message": self.message,
            "counts": self.counts,
            "conditions": self.conditions,
            "bestTrial": self.best,
            "holds": self.holds,
            "trials": self.trials,
        }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- label selectors (kubectl's syntax; the API server applies them on a cluster) ---------

_SET = re.compile(
    r"^\s*(!?)([^\s!=,()]+)\s*(?:(in|notin)\s*\(([^)]*)\)|(==|=|!=)\s*([^\s,]*))?\s*$"
)


def parse_selector(text: str) -> list[tuple[str, str, set[str]]]:
    """``team=vision,env!=prod,gpu,!old,tier in (a,b)`` as (key, operator, values);
    ValueError naming the part that is not a requirement."""
    requirements: list[tuple[str, str, set[str]]] = []
    for part in _split_selector(text):
        match = _SET.match(part)
        if not match:
            raise ValueError(
                f"label selector: {part.strip()!r} is not key=value, key!=value, "
                "key, !key, key in (a,b) or key notin (a,b)"
            )
        negated, key, set_op, members, op, value = match.groups()
        if negated:
            if set_op or op:
                raise ValueError(f"label selector: {part.strip()!r}: !key takes no value")
            requirements.append((key, "!exists", set()))
        elif set_op:
            values = {v.strip() for v in members.split(",") if v.strip()}
            requirements.append((key, set_op, values))
        elif op:
            requirements.append((key, "!=" if op == "!=" else "=", {value}))
        else:
            requirements.append((key, "exists", set()))
    return requirements


def _split_selector(text: str) -> list[str]:
    """Split at commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += char == "("
        depth -= char == ")"
        current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def matches(labels: Mapping[str, str], selector: Sequence[tuple[str, str, set[str]]]) -> bool:
    for key, op, values in selector:
        present = key in labels
        value = labels.get(key)
        ok = {
            "exists": present,
            "!exists": not present,
            "=": present and value in values,
            "!=": not present or value not in values,
            "in": present and value in values,
            "notin": not present or value not in values,
        }[op]
        if not ok:
            return False
    return True


# --- from a status (both places) ---------------------------------------------------------


def _summary_from(
    name: str,
    spec_doc: Mapping[str, Any],
    metadata: Mapping[str, Any],
    status: Mapping[str, Any],
    started: float | None,
) -> Summary:
    counts = status.get("trials") or {}
    done = sum(int(counts.get(k) or 0) for k in ENDED_COUNTS)
    try:
        experiment = Experiment.model_validate(
            {
                "apiVersion": f"{GROUP}/v1alpha1",
                "kind": "Experiment",
                "metadata": {"name": name},
                "spec": dict(spec_doc),
            }
        )
        done, most = progress_of(experiment.spec, counts)
        objectives = experiment.spec.all_objectives
        objective = ", ".join(f"{o.direction[:3]} {o.metric}" for o in objectives)
    except ValueError:
        most, objective = None, None  # a spec that no longer reads: shown without them
    best = status.get("best") or {}
    return Summary(
        name=name,
        phase=str(status.get("phase") or "Pending"),
        done=done,
        max=most,
        best=status.get("bestValue", best.get("value")),
        best_trial=best.get("trial"),
        objective=objective,
        started=started,
        labels=dict(metadata.get("labels") or {}),
        description=(metadata.get("annotations") or {}).get(DESCRIPTION_ANNOTATION),
        reason=status.get("reason"),
    )


def _holds_from_status(spec: Mapping[str, Any], status: Mapping[str, Any]) -> list[str]:
    """What the status and spec say holds trials back (both places)."""
    holds = []
    if spec.get("suspend"):
        policy = spec.get("suspendPolicy", "Finish")
        holds.append(f"spec.suspend is true (suspendPolicy {policy}): no new trials start")
    counts = status.get("trials") or {}
    parallelism = int((spec.get("budget") or {}).get("parallelism") or 1)
    if status.get("phase") == "Running" and int(counts.get("running") or 0) >= parallelism:
        holds.append(f"budget.parallelism {parallelism} reached: new trials wait for a free slot")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "SpecValid" and cond.get("status") == "False":
            holds.append(f"the spec is invalid: {cond.get('message', '')}")
    return holds


# --- local run directories -------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_is_live(state: Mapping[str, Any]) -> bool | None:
    """Whether the run's process still runs: None when state.json names none (it ended,
    or an older Trialforge wrote it) or another host runs it."""
    if state.get("phase") not in ("Pending", "Running"):
        return None
    pid, host = state.get("pid"), state.get("host")
    if not isinstance(pid, int):
        return None if state.get("formatVersion", 1) < 2 else False
    if host and host != socket.gethostname():
        return None
    return _alive(pid)


def is_run_dir(path: Path) -> bool:
    return (path / "experiment.yaml").is_file()


def local_summary(path: Path) -> Summary:
    directory = RunDirectory(path)
    doc = directory.recorded_spec()
    if doc is None:
        raise NotFound(f"{path} is not a run directory (no experiment.yaml)")
    state = directory.load_state()
    metadata = doc.get("metadata") or {}
    summary = _summary_from(
        state.get("name") or metadata.get("name") or path.name,
        doc.get("spec") or {},
        metadata,
        state,
        timestamp(state.get("startTime")),
    )
    summary.run_dir = str(path)
    summary.live = run_is_live(state)
    return summary


def local_runs(root: Path) -> list[Summary]:
    """Every run directory at ``root`` (itself one, or a folder of them), by name.

    A run directory that cannot be read (a newer format, a broken file) is left
    out of the list with a warning in the result's ``reason``.
    """
    if not root.exists():
        raise NotFound(f"{root}: no such folder (run `trialforge run FILE` first, or give --dir)")
    folders = [root] if is_run_dir(root) else sorted(p for p in root.iterdir() if is_run_dir(p))
    out = []
    for folder in folders:
        try:
            out.append(local_summary(folder))
        except (ValueError, OSError, yaml.YAMLError) as exc:
            out.append(
                Summary(
                    folder.name,
                    "Unknown",
                    0,
                    None,
                    None,
                    None,
                    None,
                    None,
                    run_dir=str(folder),
                    reason=f"unreadable: {exc}",
                )
            )
    return out


def find_run_dir(name: str, root: Path) -> Path:
    """A run directory by its path, or by its experiment's name under ``root``."""
    path = Path(name)
    if is_run_dir(path):
        return path
    candidate = root / name
    if is_run_dir(candidate):
        return candidate
    if root.exists() and not is_run_dir(root):
        for summary in local_runs(root):
            if summary.name == name and summary.run_dir:
                return Path(summary.run_dir)
    raise NotFound(f"no run directory {name!r} (looked for {name}, {candidate})")


def local_detail(path: Path) -> Detail:
    summary = local_summary(path)
    directory = RunDirectory(path)
    state = directory.load_state()
    doc = directory.recorded_spec() or {}
    spec = doc.get("spec") or {}
    holds = _holds_from_status(spec, state)
    if summary.live is False:
        holds.insert(
            0,
            "the process that ran it is gone (killed?): run `trialforge run` on the same "
            "file and --dir to resume it",
        )
    if state.get("phase") == "Suspended":
        holds.insert(0, f"suspended ({state.get('reason')}): {state.get('message')}")
    latest: dict[int, Any] = {}
    for record in directory.load_trials():
        if record.index not in latest or record.attempt >= latest[record.index].attempt:
            latest[record.index] = record
    trials = [
        {
            "name": r.name,
            "phase": r.phase,
            "reason": r.reason,
            "message": r.message,
            "values": list(r.values) if r.values else None,
        }
        for _, r in sorted(latest.items())
    ]
    return Detail(
        summary,
        dict(state.get("trials") or {}),
        list(state.get("conditions") or []),
        state.get("best"),
        state.get("message"),
        holds,
        trials,
    )


# --- a cluster ------------------------------------------------------------------------------


def cluster_summary(obj: Mapping[str, Any]) -> Summary:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    started = timestamp(status.get("startTime") or meta.get("creationTimestamp"))
    summary = _summary_from(meta.get("name", ""), obj.get("spec") or {}, meta, status, started)
    summary.namespace = meta.get("namespace")
    return summary


def cluster_experiments(
    kube: Any, namespace: str | None, selector: str | None = None
) -> list[Summary]:
    """Experiments in ``namespace`` (None: every namespace), those the API server
    selects by ``selector``, by namespace and name."""
    objs = kube.list_experiments(namespace, label_selector=selector)
    summaries = [cluster_summary(o) for o in objs]
    return sorted(summaries, key=lambda s: (s.namespace or "", s.name))


def _pod_holds(trial: str, pods: Iterable[Mapping[str, Any]]) -> list[str]:
    """Why a trial's pods do not run: unschedulable, image pulls, waiting containers."""
    out = []
    for pod in pods:
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        if status.get("phase") != "Pending":
            continue
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                why = cond.get("reason") or "not scheduled"
                out.append(f"{trial}: pod {name} {why}: {cond.get('message', '')}".rstrip(": "))
        for cs in (status.get("initContainerStatuses") or []) + (
            status.get("containerStatuses") or []
        ):
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
                out.append(
                    f"{trial}: container {cs.get('name')} {waiting['reason']}: "
                    f"{waiting.get('message', '')}".rstrip(": ")
                )
    return out


def cluster_detail(kube: Any, namespace: str, name: str) -> Detail:
    obj = kube.get_experiment(namespace, name)
    if obj is None:
        raise NotFound(f"no Experiment {namespace}/{name}")
    summary = cluster_summary(obj)
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    holds = _holds_from_status(spec, status)
    trials = kube.list_trials(namespace, name)
    jobs = {j["metadata"]["name"]: j for j in kube.list_jobs(namespace, name)}
    pods: dict[str, list[dict[str, Any]]] = {}
    for pod in kube.list_pods(namespace, name):
        trial = (pod["metadata"].get("labels") or {}).get(LABEL_TRIAL)
        if trial:
            pods.setdefault(trial, []).append(pod)
    rows = []
    for t in sorted(trials, key=lambda t: (t["spec"].get("index", 0), t["spec"].get("attempt", 0))):
        tname = t["metadata"]["name"]
        tstatus = t.get("status") or {}
        phase = tstatus.get("phase", "Pending")
        rows.append(
            {
                "name": tname,
                "phase": phase,
                "reason": tstatus.get("reason"),
                "message": tstatus.get("message"),
                "values": tstatus.get("values"),
            }
        )
        if phase in TERMINAL_PHASES:
            continue
        reason = tstatus.get("reason")
        if reason in WRITTEN_HOLDS:
            # What the operator wrote holds it back (Unschedulable, WaitingForAdmission, Paused).
            holds.append(f"{tname}: {reason}: {tstatus.get('message') or ''}".rstrip(": "))
            continue
        job = jobs.get(tname)
        if job is not None and (job.get("spec") or {}).get("suspend"):
            paused = (job["metadata"].get("annotations") or {}).get(ANNOTATION_PAUSED)
            if paused:
                holds.append(f"{tname}: its Job is paused with the experiment")
            else:
                queue = spec.get("queue")
                holds.append(
                    f"{tname}: its Job is suspended, waiting for Kueue to admit it"
                    + (f" (queue {queue})" if queue else "")
                )
        holds.extend(_pod_holds(tname, pods.get(tname, [])))
    return Detail(
        summary,
        dict(status.get("trials") or {}),
        list(status.get("conditions") or []),
        status.get("best"),
        status.get("message"),
        holds,
        rows,
    )


def filter_summaries(
    summaries: Iterable[Summary], selector: str | None = None, phases: Sequence[str] = ()
) -> list[Summary]:
    """Those whose labels match ``selector`` and whose phase is one of ``phases``
    (case-insensitive; none: every phase)."""
    requirements = parse_selector(selector) if selector else []
    wanted = {p.lower() for p in phases}
    return [
        s
        for s in summaries
        if matches(s.labels, requirements) and (not wanted or s.phase.lower() in wanted)
    ]
