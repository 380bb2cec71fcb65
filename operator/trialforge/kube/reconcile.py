"""The reconcile: one Experiment, the world as it is, the planner's actions carried out.

Level-based and idempotent, in controller-runtime's sense: whatever event woke
it, it reads the Experiment, its Trials, their Jobs and pods, brings each
Trial's status in line with its Job, asks the planner, and acts.  Trial names
are deterministic, so an action repeated after a crash finds its object
already there (AlreadyExists is success) and a trial is never duplicated.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.rest import ApiException

from trialforge.api.experiment import Experiment
from trialforge.api.status import ACTIVE_PHASES, TERMINAL_PHASES
from trialforge.engine.changes import search_fingerprint
from trialforge.engine.errors import EngineError
from trialforge.engine.history import rules
from trialforge.engine.planner import Plan, Planner, StartTrial, StopTrial
from trialforge.engine.record import TrialRecord, timestamp, trial_spec
from trialforge.engine.status import experiment_phase, stop_status
from trialforge.engine.validation import ExperimentInvalid, FieldError, load_experiment
from trialforge.engine.warm import WarmStart, warm_trials
from trialforge.kube import names
from trialforge.kube.client import Kube
from trialforge.kube.disruption import disruption_condition
from trialforge.kube.jobs import build_job, owner_reference, trial_labels
from trialforge.kube.kueue import active_patch, workloads_by_job
from trialforge.kube.logtail import read_tail
from trialforge.kube.observe import GPU, GPU_PRODUCT, run_start, trial_status_from, trial_view
from trialforge.kube.status import StatusWriter
from trialforge.kube.tokens import TokenSecrets
from trialforge.metrics import exporter
from trialforge.metrics.contract import ingest_token

log = logging.getLogger("trialforge.reconcile")

DEFAULT_RESYNC = 30.0


@dataclass
class _Cached:
    uid: str
    fingerprint: str
    planner: Planner


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
        self.status = StatusWriter(kube)
        self.tokens = TokenSecrets(kube, ingest_key) if ingest_key is not None else None
        self._gpu_types: dict[str, str] = {}  # node -> its nvidia.com/gpu.product
        self._nodes_seen: set[str] = set()

    def forget(self, namespace: str, name: str) -> None:
        self._cache.pop((namespace, name), None)
        self.status.forget(namespace, name)
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
            self.status.invalid(obj, exc)
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

        try:
            planner = self._planner(obj, experiment)
        except ExperimentInvalid as exc:
            # A warm start that cannot be read (yet): refused, and looked at again,
            # since the Experiment it names may still be created.
            self.status.invalid(obj, exc)
            return self.resync
        except EngineError as exc:
            return self._cannot_plan(obj, exc)
        trials = self.kube.list_trials(namespace, name)
        jobs = {j["metadata"]["name"]: j for j in self.kube.list_jobs(namespace, name)}
        pods: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for pod in self.kube.list_pods(namespace, name):
            trial = (pod["metadata"].get("labels") or {}).get(names.LABEL_TRIAL)
            if trial:
                pods[trial].append(pod)

        spec = experiment.spec
        pause = spec.suspend and spec.suspend_policy == "Pause"
        # With a queue, Kueue's Workload of each Job: why it waits, and how it pauses.
        workloads = workloads_by_job(self.kube.list_workloads(namespace)) if spec.queue else {}
        self._learn_gpu_types(pods)
        for trial in trials:
            job = jobs.get(names.job_name(trial["metadata"]["name"]))
            workload = workloads.get(job["metadata"].get("uid", "")) if job else None
            self._observe(experiment, trial, job, pods, workload)
            phase = (trial.get("status") or {}).get("phase", "Pending")
            if phase not in TERMINAL_PHASES and job is None:
                # Decided and recorded, but its Job never made it (a crash, a failed create).
                self._start_job(experiment, trial)
            elif phase in TERMINAL_PHASES and job is not None and _job_active(job):
                # Stopped (pruned, cancelled) but its Job still runs: a crash
                # between the verdict and the delete.
                self.kube.delete_job(namespace, job["metadata"]["name"])
            elif phase not in TERMINAL_PHASES and job is not None and _job_active(job):
                if spec.queue:
                    self._hold_queued(trial, job, pause, workload)
                else:
                    self._hold(trial, job, pause, pods.get(trial["metadata"]["name"], []))

        now = time.time()
        started_at = timestamp(status.get("startTime")) or now
        try:
            plan = planner.plan(
                [trial_view(experiment.spec, t) for t in trials],
                now=now,
                started_at=started_at,
                suspended=experiment.spec.suspend,
            )
        except EngineError as exc:
            return self._cannot_plan(obj, exc)
        by_name = {t["metadata"]["name"]: t for t in trials}
        for action in plan.actions:
            if isinstance(action, StopTrial):
                self._stop(by_name.get(action.name), action, experiment, pods.get(action.name))
        for action in plan.of(StartTrial):
            created = self._create_trial(obj, experiment, action)
            if created is not None:
                by_name[created["metadata"]["name"]] = created
        everyone = list(by_name.values())
        gpu_seconds = sum(float((t.get("status") or {}).get("gpuSeconds") or 0) for t in everyone)
        _export(obj, experiment, plan, everyone, gpu_seconds)
        due = self.status.write(obj, experiment, plan, gpu_seconds, started_at)
        if due is not None:
            return due
        deadline = experiment.spec.budget.deadline_seconds
        if deadline is not None and plan.finished is None:
            return max(1.0, min(self.resync, started_at + deadline - now))
        return None if plan.finished else self.resync

    # -- pieces -------------------------------------------------------------------------

    def _cannot_plan(self, obj: Mapping[str, Any], exc: EngineError) -> float:
        """The engine cannot plan this spec (a sampler that fails once it samples): say so
        on the Experiment (a condition and an Event, once per message), start and stop
        nothing. The planner, perhaps half way through a suggestion, is dropped; the
        trials already running are still observed (before the plan) and it is tried again
        at the next resync."""
        meta = obj["metadata"]
        self._cache.pop((meta["namespace"], meta["name"]), None)
        log.warning("cannot plan %s/%s", meta["namespace"], meta["name"], exc_info=exc)
        self.status.refuse(obj, "CannotPlan", str(exc))
        return self.resync

    def _planner(self, obj: Mapping[str, Any], experiment: Experiment) -> Planner:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        uid = obj["metadata"]["uid"]
        fingerprint = search_fingerprint(experiment.spec)
        cached = self._cache.get(key)
        if cached is None or cached.uid != uid or cached.fingerprint != fingerprint:
            # A new process, a new object under an old name, or a changed search:
            # the planner is rebuilt from the Trials on its first plan.
            warm = self._warm_start(obj, experiment)
            cached = _Cached(uid, fingerprint, Planner(experiment.spec, experiment.name, warm))
            exporter.timed_suggestions(cached.planner.search)
            self._cache[key] = cached
        cached.planner.spec = experiment.spec  # budget and suspend may change
        return cached.planner

    def _warm_start(self, obj: Mapping[str, Any], experiment: Experiment) -> WarmStart | None:
        """spec.warmStart.experiment's finished trials (same namespace), as engine.warm
        picks them; :class:`ExperimentInvalid` naming the field when it cannot be read."""
        warm = experiment.spec.warm_start
        if warm is None:
            return None
        namespace = obj["metadata"]["namespace"]
        if warm.experiment is None:
            raise ExperimentInvalid(
                [
                    FieldError(
                        "spec.warmStart.runDir",
                        "a run directory is on the machine that ran `trialforge run`; on a "
                        "cluster, warm-start from an Experiment: spec.warmStart.experiment",
                    )
                ]
            )
        if warm.experiment == experiment.name:
            raise ExperimentInvalid(
                [FieldError("spec.warmStart.experiment", "names this experiment itself")]
            )
        source = self.kube.get_experiment(namespace, warm.experiment)
        if source is None:
            raise ExperimentInvalid(
                [
                    FieldError(
                        "spec.warmStart.experiment",
                        f"no Experiment {warm.experiment!r} in namespace {namespace!r}",
                    )
                ]
            )
        try:
            earlier = load_experiment({k: v for k, v in source.items() if k != "status"})
        except ExperimentInvalid as exc:
            raise ExperimentInvalid(
                [
                    FieldError(
                        "spec.warmStart.experiment",
                        f"Experiment {warm.experiment!r} is itself invalid ({exc.errors[0]})",
                    )
                ]
            ) from None
        trials = self.kube.list_trials(namespace, warm.experiment)
        records = [trial_view(earlier.spec, t) for t in trials]
        # The last value of each metric, for constraints the earlier experiment lacked.
        last_values = {
            t["metadata"]["name"]: {
                m: float(s["latest"])
                for m, s in ((t.get("status") or {}).get("metrics") or {}).items()
                if isinstance((s or {}).get("latest"), int | float)
            }
            for t in trials
        }
        status = obj.get("status") or {}
        # Its recorded start, in whole seconds: an operator that restarts tells the same trials.
        before = timestamp(status.get("startTime")) or float(int(time.time()))
        result = warm_trials(
            experiment.spec, earlier.spec, records,
            source=f"experiment {warm.experiment}", before=before, last_values=last_values,
        )  # fmt: skip
        for warning in result.warnings:
            self.kube.event(obj, "Warning", "WarmStartPartial", warning)
        self.kube.event(obj, "Normal", "WarmStarted", f"told the sampler {result.summary}")
        return result

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
        workload: Mapping[str, Any] | None = None,
    ) -> None:
        tname = trial["metadata"]["name"]
        namespace = trial["metadata"]["namespace"]
        nodes = self._nodes_to_judge(trial, pods.get(tname, []))
        for _ in range(5):
            observed = trial_status_from(
                experiment.spec,
                trial,
                job,
                pods.get(tname, []),
                self._gpu_types,
                workload=workload,
                nodes=nodes,
            )
            if not observed.status:
                return
            ends = observed.status.get("phase") in TERMINAL_PHASES
            if ends and "logTail" not in (trial.get("status") or {}):
                tail = read_tail(self.kube, pods.get(tname, []), experiment.spec.trial.template)
                if tail is not None:
                    observed.status["logTail"] = tail
            # Concluding a trial reads its stored history: make that write
            # conditional, so observations the ingest stored since this read are
            # not concluded without (a 409 means: read again, conclude again).
            # So is counting a disruption (it adds to what the status holds).
            ends = ends or "disruptions" in observed.status
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

    def _nodes_to_judge(
        self, trial: Mapping[str, Any], pods: list[dict[str, Any]]
    ) -> dict[str, dict[str, Any] | None]:
        """The nodes worth a read for this trial (None: gone): those of pods a
        disruption ended that are not counted yet (a drain? a lost node?), and
        of running pods that are no longer ready (is the node?).  Rare, so read
        from the server each time; a node we may not read is left out."""
        status = trial.get("status") or {}
        if status.get("phase") in TERMINAL_PHASES:
            return {}
        seen = {d.get("run") for d in status.get("disruptionHistory") or ()}
        wanted = set()
        for pod in pods:
            node = (pod.get("spec") or {}).get("nodeName")
            if not node:
                continue
            if disruption_condition(pod) is not None:
                if pod["metadata"]["name"] not in seen:
                    wanted.add(node)
            elif (pod.get("status") or {}).get("phase") == "Running" and _not_ready(pod):
                wanted.add(node)
        nodes: dict[str, dict[str, Any] | None] = {}
        for node in sorted(wanted):
            try:
                nodes[node] = self.kube.node(node)
            except PermissionError:
                continue
        return nodes

    def _create_trial(
        self, obj: Mapping[str, Any], experiment: Experiment, action: StartTrial
    ) -> dict[str, Any] | None:
        namespace = obj["metadata"]["namespace"]
        record = TrialRecord.start(experiment.name, experiment.spec, action)
        name = record.name
        body = {
            "apiVersion": names.api_version(),
            "kind": "Trial",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": trial_labels(experiment.name, name, action.index, action.attempt),
                "ownerReferences": [owner_reference(obj)],
            },
            "spec": trial_spec(experiment.name, record),
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
        if self.tokens is not None:
            self.tokens.ensure(experiment.name, experiment.spec.trial.retries, trial)
        job, service = build_job(
            experiment, trial, self.ingest_url if self.ingest_key else None, self.collector_image
        )
        if service is not None:
            self.kube.create(service)
        self.kube.create(job)

    def _hold(
        self,
        trial: Mapping[str, Any],
        job: Mapping[str, Any],
        pause: bool,
        pods: list[dict[str, Any]],
    ) -> None:
        """Suspend a running trial's Job while its experiment is paused; resume it after."""
        paused = bool((job["metadata"].get("annotations") or {}).get(names.ANNOTATION_PAUSED))
        if pause == paused:
            return
        if pause:
            self._bank_gpu_seconds(trial, job, pods)
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

    def _hold_queued(
        self,
        trial: Mapping[str, Any],
        job: Mapping[str, Any],
        pause: bool,
        workload: Mapping[str, Any] | None,
    ) -> None:
        """Pause with a queue: deactivate the Job's Workload (Kueue evicts it, suspends
        the Job and admits it no more) and mark the Job as paused by us; resume:
        reactivate it (Kueue admits it again when the quota allows)."""
        paused = bool((job["metadata"].get("annotations") or {}).get(names.ANNOTATION_PAUSED))
        if pause == paused:
            return
        namespace = job["metadata"]["namespace"]
        if workload is None:
            if pause:
                return  # Kueue has not made its Workload yet: the next reconcile
        else:
            self.kube.patch_workload(
                namespace, workload["metadata"]["name"], active_patch(active=not pause)
            )
        # The annotation marks the deactivation as ours: a resume never reactivates
        # a Workload someone else deactivated.
        self.kube.patch_job(
            namespace,
            job["metadata"]["name"],
            {"metadata": {"annotations": {names.ANNOTATION_PAUSED: "true" if pause else None}}},
        )
        tname = trial["metadata"]["name"]
        if pause:
            self.kube.event(trial, "Normal", "TrialPaused", f"{tname}: the experiment is paused")
        else:
            self.kube.event(trial, "Normal", "TrialResumed", f"{tname}: the experiment resumed")

    def _bank_gpu_seconds(
        self, trial: Mapping[str, Any], job: Mapping[str, Any], pods: list[dict[str, Any]]
    ) -> None:
        """Add the run a pause ends to the trial's gpuSeconds: the time it stays paused
        is not counted (its conclusion counts only the run after the resume)."""
        template = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
        gpus = sum(
            float(((c.get("resources") or {}).get("limits") or {}).get(GPU) or 0)
            for c in template.get("containers") or []
        )
        began = run_start([p for p in pods if disruption_condition(p) is None], job)
        if not gpus or began is None:
            return
        workers = int((job.get("spec") or {}).get("parallelism") or 1)
        status = trial.get("status") or {}
        spent = gpus * workers * max(0.0, time.time() - began)
        total = round(float(status.get("gpuSeconds") or 0.0) + spent, 3)
        try:
            self.kube.patch_status(
                names.TRIALS,
                trial["metadata"]["namespace"],
                trial["metadata"]["name"],
                {"gpuSeconds": total},
                trial["metadata"].get("resourceVersion"),
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise
            # Changed meanwhile: this run's GPU time goes uncounted, never twice.

    def _stop(
        self,
        trial: Mapping[str, Any] | None,
        action: StopTrial,
        experiment: Experiment,
        pods: list[dict[str, Any]] | None = None,
    ) -> None:
        if trial is None:
            return
        namespace = trial["metadata"]["namespace"]
        status = stop_status(action, time.time())
        # Its last output lines, before its Job (and pods) are deleted.
        tail = read_tail(self.kube, pods or [], experiment.spec.trial.template)
        if tail is not None:
            status["logTail"] = tail
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


def _not_ready(pod: Mapping[str, Any]) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") != "True"
    return False


def _job_active(job: Mapping[str, Any]) -> bool:
    if job["metadata"].get("deletionTimestamp"):
        return False
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return False
    return True


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
    return rules(spec)[0]


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
