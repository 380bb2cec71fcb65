"""The reconcile: one Experiment, the world as it is, the planner's actions carried out.

Level-based and idempotent, in controller-runtime's sense: whatever event woke
it, it reads the Experiment, its Trials, their Jobs and pods, brings each
Trial's status in line with its Job, asks the planner, and acts.  Trial names
are deterministic, so an action repeated after a crash finds its object
already there (AlreadyExists is success) and a trial is never duplicated.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.rest import ApiException

from trialforge.api.experiment import Experiment, ExperimentSpec
from trialforge.api.status import ACTIVE_PHASES, TERMINAL_PHASES
from trialforge.api.trial import trial_name
from trialforge.engine.lineage import trial_spec_fields
from trialforge.engine.planner import FinishExperiment, Plan, Planner, StartTrial, StopTrial
from trialforge.engine.validation import ExperimentInvalid, load_experiment
from trialforge.kube import names
from trialforge.kube.client import Kube
from trialforge.kube.jobs import build_job, owner_reference, trial_labels
from trialforge.kube.observe import GPU_PRODUCT, now_iso, parse_time, trial_status_from, trial_view
from trialforge.metrics import exporter

log = logging.getLogger("trialforge.reconcile")

DEFAULT_RESYNC = 30.0
# Experiment status fields that only tally the trials; a change to nothing else
# is written at most once per TALLY_INTERVAL seconds.
TALLIES = frozenset({"trials", "gpuSeconds", "best", "bestValue", "comparison", "message"})
TALLY_INTERVAL = 1.0


def ingest_token(key: bytes, namespace: str, trial: str) -> str:
    """The per-trial token: an HMAC the operator can check without storing it."""
    return hmac.new(key, f"{namespace}/{trial}".encode(), hashlib.sha256).hexdigest()


@dataclass
class _Cached:
    uid: str
    fingerprint: str
    planner: Planner


def _fingerprint(experiment: Experiment) -> str:
    spec = experiment.spec
    fixed = {
        "objectives": [o.model_dump() for o in spec.all_objectives],
        "parameters": [p.model_dump() for p in spec.parameters],
        "search": spec.search.model_dump(),
        "earlyStopping": spec.early_stopping.model_dump(),
    }
    return hashlib.sha256(repr(fixed).encode()).hexdigest()


class Reconciler:
    collector_image: str | None = None  # the metrics sidecar's image; None: no sidecar

    def __init__(
        self,
        kube: Kube,
        ingest_url: str | None = None,
        ingest_key: bytes | None = None,
        resync: float = DEFAULT_RESYNC,
    ) -> None:
        self.kube = kube
        self.ingest_url = ingest_url
        self.ingest_key = ingest_key
        self.resync = resync
        self._cache: dict[tuple[str, str], _Cached] = {}
        self._status_written: dict[tuple[str, str], float] = {}  # monotonic time
        self._gpu_types: dict[str, str] = {}  # node -> its nvidia.com/gpu.product
        self._token_secrets: set[tuple[str, str, str]] = set()  # (namespace, name, owner uid)
        self._nodes_seen: set[str] = set()

    def forget(self, namespace: str, name: str) -> None:
        self._cache.pop((namespace, name), None)
        self._status_written.pop((namespace, name), None)
        exporter.forget_experiment(namespace, name)

    # -- the reconcile ------------------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> float | None:
        """Reconcile one Experiment; returns seconds until it should be looked at again."""
        obj = self.kube.get_experiment(namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            # Owner references take its Trials, Jobs, pods and Services with it.
            self.forget(namespace, name)
            return None
        status = obj.get("status") or {}
        try:
            experiment = load_experiment({k: v for k, v in obj.items() if k != "status"})
        except ExperimentInvalid as exc:
            self._invalid(obj, exc)
            return None
        if (
            status.get("phase") in ("Succeeded", "Failed")
            and status.get("completionTime")
            and status.get("observedGeneration") == obj["metadata"].get("generation")
        ):
            # Finished, and the spec has not changed since: nothing can happen.  A
            # changed spec (a larger maxTrials, a later deadline) is planned again
            # below and may resume the experiment.
            return None

        planner = self._planner(obj, experiment)
        trials = self.kube.list_trials(namespace, name)
        jobs = {j["metadata"]["name"]: j for j in self.kube.list_jobs(namespace, name)}
        pods: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for pod in self.kube.list_pods(namespace, name):
            trial = (pod["metadata"].get("labels") or {}).get(names.LABEL_TRIAL)
            if trial:
                pods[trial].append(pod)

        spec = experiment.spec
        pause = spec.suspend and spec.suspend_policy == "Pause"
        self._learn_gpu_types(pods)
        for trial in trials:
            job = jobs.get(names.job_name(trial["metadata"]["name"]))
            self._observe(experiment, trial, job, pods)
            phase = (trial.get("status") or {}).get("phase", "Pending")
            if phase not in TERMINAL_PHASES and job is None:
                # Decided and recorded, but its Job never made it (a crash, a failed create).
                self._start_job(experiment, trial)
            elif phase in TERMINAL_PHASES and job is not None and _job_active(job):
                # Stopped (pruned, cancelled) but its Job still runs: a crash
                # between the verdict and the delete.
                self.kube.delete_job(namespace, job["metadata"]["name"])
            elif phase not in TERMINAL_PHASES and job is not None and _job_active(job):
                self._hold(trial, job, pause)

        now = time.time()
        started_at = parse_time(status.get("startTime")) or now
        plan = planner.plan(
            [trial_view(experiment.spec, t) for t in trials],
            now=now,
            started_at=started_at,
            suspended=experiment.spec.suspend,
        )
        by_name = {t["metadata"]["name"]: t for t in trials}
        for action in plan.actions:
            if isinstance(action, StopTrial):
                self._stop(by_name.get(action.name), action)
        for action in plan.of(StartTrial):
            created = self._create_trial(obj, experiment, action)
            if created is not None:
                by_name[created["metadata"]["name"]] = created
        everyone = list(by_name.values())
        gpu_seconds = sum(float((t.get("status") or {}).get("gpuSeconds") or 0) for t in everyone)
        _export(obj, experiment, plan, everyone, gpu_seconds)
        due = self._write_status(obj, experiment, plan, gpu_seconds, started_at)
        if due is not None:
            return due
        deadline = experiment.spec.budget.deadline_seconds
        if deadline is not None and plan.finished is None:
            return max(1.0, min(self.resync, started_at + deadline - now))
        return None if plan.finished else self.resync

    # -- pieces -------------------------------------------------------------------------

    def _planner(self, obj: Mapping[str, Any], experiment: Experiment) -> Planner:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        uid = obj["metadata"]["uid"]
        fingerprint = _fingerprint(experiment)
        cached = self._cache.get(key)
        if cached is None or cached.uid != uid or cached.fingerprint != fingerprint:
            # A new process, a new object under an old name, or a changed search:
            # the planner is rebuilt from the Trials on its first plan.
            cached = _Cached(uid, fingerprint, Planner(experiment.spec, experiment.name))
            exporter.timed_suggestions(cached.planner.search)
            self._cache[key] = cached
        cached.planner.spec = experiment.spec  # budget and suspend may change
        return cached.planner

    def _learn_gpu_types(self, pods: Mapping[str, list[dict[str, Any]]]) -> None:
        """The GPU model of each node a trial runs on, read once per node (lineage)."""
        for group in pods.values():
            for pod in group:
                node = (pod.get("spec") or {}).get("nodeName")
                if not node or node in self._nodes_seen:
                    continue
                self._nodes_seen.add(node)
                labels = self.kube.node_labels(node)
                if labels and labels.get(GPU_PRODUCT):
                    self._gpu_types[node] = labels[GPU_PRODUCT]

    def _observe(
        self,
        experiment: Experiment,
        trial: dict[str, Any],
        job: Mapping[str, Any] | None,
        pods: Mapping[str, list[dict[str, Any]]],
    ) -> None:
        tname = trial["metadata"]["name"]
        namespace = trial["metadata"]["namespace"]
        for _ in range(5):
            observed = trial_status_from(
                experiment.spec, trial, job, pods.get(tname, []), self._gpu_types
            )
            if not observed.status:
                return
            # Concluding a trial reads its stored history: make that write
            # conditional, so observations the ingest stored since this read are
            # not concluded without (a 409 means: read again, conclude again).
            ends = observed.status.get("phase") in TERMINAL_PHASES
            try:
                updated = self.kube.patch_status(
                    names.TRIALS,
                    namespace,
                    tname,
                    observed.status,
                    trial["metadata"]["resourceVersion"] if ends else None,
                )
                break
            except ApiException as exc:
                if exc.status == 404:
                    return
                if exc.status != 409 or not ends:
                    raise
            fresh = self.kube.get_trial(namespace, tname)
            if fresh is None:
                return
            trial.clear()
            trial.update(fresh)
        else:
            raise RuntimeError(f"trial {namespace}/{tname} kept changing while it was concluded")
        trial["status"] = updated.get("status") or {
            **(trial.get("status") or {}),
            **observed.status,
        }
        trial["metadata"]["resourceVersion"] = updated["metadata"]["resourceVersion"]
        if observed.event:
            self.kube.event(trial, *observed.event)

    def _create_trial(
        self, obj: Mapping[str, Any], experiment: Experiment, action: StartTrial
    ) -> dict[str, Any] | None:
        namespace = obj["metadata"]["namespace"]
        name = trial_name(experiment.name, action.index, action.attempt)
        body = {
            "apiVersion": names.api_version(),
            "kind": "Trial",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": trial_labels(experiment.name, name, action.index, action.attempt),
                "ownerReferences": [owner_reference(obj)],
            },
            "spec": {
                "experiment": experiment.name,
                "index": action.index,
                "attempt": action.attempt,
                "parameters": action.parameters,
                "seed": action.seed,
                "searchState": action.search_state,
                **trial_spec_fields(experiment.spec, action),
            },
        }
        created = self.kube.create_trial(namespace, body)
        if created is None:
            created = self.kube.get_trial(namespace, name)
            if created is None:
                return None
        if action.why == "retry":
            self.kube.event(obj, "Normal", "TrialRetried", f"{name}: attempt {action.attempt}")
        self._start_job(experiment, created)
        return created

    def _start_job(self, experiment: Experiment, trial: Mapping[str, Any]) -> None:
        if self.ingest_key is not None:
            self._ensure_tokens(experiment, trial)
        job, service = build_job(
            experiment, trial, self.ingest_url if self.ingest_key else None, self.collector_image
        )
        if service is not None:
            self.kube.create(service)
        self.kube.create(job)

    def _ensure_tokens(self, experiment: Experiment, trial: Mapping[str, Any]) -> None:
        """The token Secret of the trial's block of indices (names.token_secret_name)."""
        assert self.ingest_key is not None
        namespace = trial["metadata"]["namespace"]
        index = int(trial["spec"]["index"])
        retries = experiment.spec.trial.retries
        secret = names.token_secret_name(experiment.name, index, retries)
        owners = list(trial["metadata"].get("ownerReferences") or [])
        # By the Experiment's uid: a new Experiment under an old name needs its own.
        known = (namespace, secret, owners[0]["uid"] if owners else "")
        if known in self._token_secrets:
            return
        block = names.token_block(retries)
        first = index // block * block
        tokens = {
            name: ingest_token(self.ingest_key, namespace, name)
            for i in range(first, first + block)
            for attempt in range(retries + 1)
            for name in [trial_name(experiment.name, i, attempt)]
        }
        self.kube.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": secret,
                    "namespace": namespace,
                    "labels": {
                        names.LABEL_EXPERIMENT: experiment.name,
                        names.LABEL_MANAGED: names.MANAGER,
                    },
                    "ownerReferences": owners,  # the Experiment's: it goes with it
                },
                "type": "Opaque",
                "stringData": tokens,
            }
        )  # AlreadyExists is success: the same tokens (they are derived from the key)
        self._token_secrets.add(known)

    def _hold(self, trial: Mapping[str, Any], job: Mapping[str, Any], pause: bool) -> None:
        """Suspend a running trial's Job while its experiment is paused; resume it after."""
        paused = bool((job["metadata"].get("annotations") or {}).get(names.ANNOTATION_PAUSED))
        if pause == paused:
            return
        # The annotation marks the suspension as ours, so a resume never unsuspends
        # a Job that waits for someone else (Kueue).
        self.kube.patch_job(
            job["metadata"]["namespace"],
            job["metadata"]["name"],
            {
                "metadata": {"annotations": {names.ANNOTATION_PAUSED: "true" if pause else None}},
                "spec": {"suspend": pause},
            },
        )
        tname = trial["metadata"]["name"]
        if pause:
            self.kube.event(trial, "Normal", "TrialPaused", f"{tname}: the experiment is paused")
        else:
            self.kube.event(trial, "Normal", "TrialResumed", f"{tname}: the experiment resumed")

    def _stop(self, trial: Mapping[str, Any] | None, action: StopTrial) -> None:
        if trial is None:
            return
        namespace = trial["metadata"]["namespace"]
        status: dict[str, Any] = {
            "phase": action.phase,
            "reason": action.reason,
            "message": action.message,
            "completionTime": now_iso(),
        }
        if not action.retryable:
            status["retryable"] = False
        # The verdict first, then the Job: a crash in between leaves a terminal
        # Trial whose Job the next reconcile deletes (never a stopped trial whose
        # missing Job would be started again).
        # Conditional on the version the decision was made from: the view may be
        # a little behind (the cache), and a trial that has ended meanwhile keeps
        # its own outcome.  A conflict with a mere observation write is retried.
        version = trial["metadata"].get("resourceVersion")
        for _ in range(5):
            try:
                self.kube.patch_status(names.TRIALS, namespace, action.name, status, version)
                break
            except ApiException as exc:
                if exc.status == 404:
                    break
                if exc.status != 409:
                    raise
            fresh = self.kube.get_trial(namespace, action.name)
            if fresh is None or (fresh.get("status") or {}).get("phase") in TERMINAL_PHASES:
                return
            version = fresh["metadata"]["resourceVersion"]
        else:
            return  # kept changing: the next reconcile decides again
        self.kube.delete_job(namespace, names.job_name(action.name))
        kind = "Warning" if action.phase == "Failed" else "Normal"
        self.kube.event(trial, kind, f"Trial{action.phase}", f"{action.name}: {action.message}")

    # -- experiment status ----------------------------------------------------------------

    def _write_status(
        self,
        obj: Mapping[str, Any],
        experiment: Experiment,
        plan: Plan,
        gpu_seconds: float,
        started_at: float,
    ) -> float | None:
        """Write the experiment's status; returns seconds until a postponed write is due."""
        old = obj.get("status") or {}
        spec = experiment.spec
        finished = plan.finished
        running = plan.counts["running"] + plan.counts["pending"]
        phase = experiment_phase(spec, plan)
        if finished is not None:
            reason, message = finished.reason, finished.message
        elif phase == "Suspended":
            reason = "Suspended"
            message = "spec.suspend is true: no new trials"
            if spec.suspend_policy == "Pause" and running:
                message += f"; {running} trials paused"
            elif running:
                message += f"; {running} running trials may finish"
        elif phase == "Running":
            reason, message = "Running", f"{running} trials running"
        else:
            reason, message = "Starting", "no trial has started yet"
        status: dict[str, Any] = {
            "phase": phase,
            "reason": reason,
            "message": message,
            "trials": plan.counts,
            "observedGeneration": obj["metadata"].get("generation"),
            "startTime": old.get("startTime")
            or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at)),
        }
        if gpu_seconds:
            status["gpuSeconds"] = round(gpu_seconds, 3)
        if plan.best is not None:
            status["best"] = {
                "trial": plan.best.name,
                "parameters": dict(plan.best.parameters),
                "value": plan.best.values[0],
            }
            if plan.best.artifact_uri:
                status["best"]["artifactUri"] = plan.best.artifact_uri
            status["bestValue"] = plan.best.values[0]
        if plan.comparison is not None:
            status["comparison"] = plan.comparison
        if spec.multi_objective and plan.pareto_front:
            status["paretoFront"] = [
                {"trial": b.name, "parameters": dict(b.parameters), "values": list(b.values)}
                for b in plan.pareto_front
            ]
        if finished is not None:
            status["completionTime"] = old.get("completionTime") or now_iso()
        elif old.get("completionTime"):
            status["completionTime"] = None  # resumed: a merge patch's null removes it
        status["conditions"] = _conditions(
            old.get("conditions") or [], phase, finished, spec.suspend, obj
        )
        changed = {k for k, v in status.items() if old.get(k) != v}
        if not changed:
            return None  # nothing changed: no write
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        since = time.monotonic() - self._status_written.get(key, float("-inf"))
        if changed <= TALLIES and since < TALLY_INTERVAL:
            # Only the counts moved: coalesce such writes to one per interval
            # (a big experiment changes them many times a second).
            return TALLY_INTERVAL - since
        self.kube.patch_status(names.EXPERIMENTS, *key, status)
        self._status_written[key] = time.monotonic()
        if finished is not None and old.get("phase") != finished.phase:
            kind = "Normal" if finished.phase == "Succeeded" else "Warning"
            self.kube.event(obj, kind, finished.reason, finished.message)
        elif finished is None and old.get("phase") in ("Succeeded", "Failed"):
            self.kube.event(obj, "Normal", "Resumed", f"the spec changed: {message}")
        return None

    def _invalid(self, obj: Mapping[str, Any], exc: ExperimentInvalid) -> None:
        """Refuse a spec the API server let through; touch no running trial."""
        old = obj.get("status") or {}
        message = "; ".join(str(e) for e in exc.errors)[:2000]
        conditions = [c for c in old.get("conditions") or [] if c.get("type") != "SpecValid"]
        previous = next(
            (c for c in old.get("conditions") or [] if c.get("type") == "SpecValid"), None
        )
        if previous and previous.get("status") == "False" and previous.get("message") == message:
            return
        conditions.append(_condition("SpecValid", "False", "InvalidSpec", message, obj, previous))
        status: dict[str, Any] = {
            "conditions": conditions,
            "observedGeneration": obj["metadata"].get("generation"),
        }
        if not old.get("phase"):
            status.update(phase="Pending", reason="InvalidSpec", message=message)
        self.kube.patch_status(
            names.EXPERIMENTS, obj["metadata"]["namespace"], obj["metadata"]["name"], status
        )
        self.kube.event(obj, "Warning", "InvalidSpec", message)
        log.warning(
            "experiment %s/%s is invalid: %s",
            obj["metadata"]["namespace"],
            obj["metadata"]["name"],
            message,
        )


def experiment_phase(spec: ExperimentSpec, plan: Plan) -> str:
    """The Experiment's phase, as its status and the exporter show it."""
    if plan.finished is not None:
        return plan.finished.phase
    if spec.suspend:
        return "Suspended"
    return "Running" if plan.counts["total"] else "Pending"


def _job_active(job: Mapping[str, Any]) -> bool:
    if job["metadata"].get("deletionTimestamp"):
        return False
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return False
    return True


def _condition(
    kind: str,
    status: str,
    reason: str,
    message: str,
    obj: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
) -> dict[str, Any]:
    same = previous is not None and previous.get("status") == status
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": (previous or {}).get("lastTransitionTime") if same else now_iso(),
        "observedGeneration": obj["metadata"].get("generation"),
    }


def _conditions(
    old: list[Mapping[str, Any]],
    phase: str,
    finished: FinishExperiment | None,
    suspended: bool,
    obj: Mapping[str, Any],
) -> list[dict[str, Any]]:
    previous = {c.get("type"): c for c in old}
    wanted = [
        ("SpecValid", "True", "Valid", "the spec is valid"),
        (
            "Running",
            "True" if phase == "Running" else "False",
            "TrialsRunning" if phase == "Running" else phase,
            "trials are running" if phase == "Running" else (finished.message if finished else ""),
        ),
        (
            "Suspended",
            "True" if suspended else "False",
            "Suspended" if suspended else "NotSuspended",
            "",
        ),
    ]
    if finished is not None:
        wanted.append((finished.phase, "True", finished.reason, finished.message))
        for kind in ("GoalReached", "BudgetExhausted"):
            hit = finished.reason == kind or (
                kind == "BudgetExhausted" and finished.reason == "SearchSpaceExhausted"
            )
            wanted.append(
                (kind, "True" if hit else "False", finished.reason, finished.message if hit else "")
            )
    return [_condition(k, s, r, m, obj, previous.get(k)) for k, s, r, m in wanted]


__all__ = ["ACTIVE_PHASES", "Reconciler", "ingest_token"]


def objective_directions(
    reconciler: Reconciler, namespace: str, name: str
) -> dict[str, str] | None:
    """Which way each objective metric improves, for the ingest's 'best' bookkeeping."""
    cached = reconciler._cache.get((namespace, name))
    spec = cached.planner.spec if cached else None
    if spec is None:
        obj = reconciler.kube.get_experiment(namespace, name)
        if obj is None:
            return None
        try:
            spec = load_experiment({k: v for k, v in obj.items() if k != "status"}).spec
        except ExperimentInvalid:
            return None
    return {o.metric: o.direction for o in spec.all_objectives}


def _export(
    obj: Mapping[str, Any],
    experiment: Experiment,
    plan: Plan,
    trials: list[dict[str, Any]],
    gpu_seconds: float,
) -> None:
    """Prometheus series from what this reconcile observed (metrics/exporter.py)."""
    meta = obj["metadata"]
    exporter.observe_experiment(
        meta["namespace"],
        meta["name"],
        trials,
        best=plan.best.values[0] if plan.best is not None else None,
        gpu_seconds=gpu_seconds,
        gpus_per_trial=exporter.gpus_per_pod(experiment.spec.trial.template)
        * experiment.spec.trial.workers,
        experiment_phase=experiment_phase(experiment.spec, plan),
    )
