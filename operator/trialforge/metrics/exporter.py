"""Every Prometheus metric of the operator, in one registry.

``REGISTRY`` is what ``/metrics`` serves; tests and the Helm chart's dashboard
check enumerate it (``exported_names()``).  Experiment and trial gauges are
level-based: the reconciler reports what it observed (``observe_experiment``)
and the exporter makes the series match, removing those of trials that are no
longer running or no longer exist, and of deleted experiments
(``forget_experiment``).

The per-trial metric series are capped (``set_series_limit``); a series over the
cap is not exported and counted once in
``trialforge_trial_metric_series_dropped_total``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, resident memory, ...

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# -- experiments and trials (level-based gauges) ------------------------------------------
TRIALS = Gauge(
    "trialforge_trials",
    "Trials per experiment and phase.",
    ["namespace", "experiment", "phase"],
    registry=REGISTRY,
)
EXPERIMENT_PHASE = Gauge(
    "trialforge_experiment_phase",
    "1 for the experiment's current phase, 0 for the others.",
    ["namespace", "experiment", "phase"],
    registry=REGISTRY,
)
BEST_OBJECTIVE = Gauge(
    "trialforge_experiment_best_objective",
    "The best objective value of the experiment's trials so far.",
    ["namespace", "experiment"],
    registry=REGISTRY,
)
GPU_SECONDS = Gauge(
    "trialforge_experiment_gpu_seconds",
    "GPU-seconds used by the experiment's trials (from its status totals).",
    ["namespace", "experiment"],
    registry=REGISTRY,
)
RUNNING_GPUS = Gauge(
    "trialforge_running_gpus",
    "GPUs requested by the experiment's running trials.",
    ["namespace", "experiment"],
    registry=REGISTRY,
)
TRIAL_METRIC = Gauge(
    "trialforge_trial_metric",
    "Latest value of each metric of each running trial.",
    ["namespace", "experiment", "trial", "metric"],
    registry=REGISTRY,
)
TRIAL_METRIC_DROPPED = Counter(
    "trialforge_trial_metric_series_dropped_total",
    "trialforge_trial_metric series not exported because of the series cap.",
    registry=REGISTRY,
)

# -- ingest ---------------------------------------------------------------------------------
OBSERVATIONS_RECEIVED = Counter(
    "trialforge_observations_received_total",
    "Observations taken from collectors (in order, not yet necessarily stored).",
    registry=REGISTRY,
)
OBSERVATIONS_INGESTED = Counter(
    "trialforge_observations_ingested_total",
    "Observations stored in Trial statuses.",
    registry=REGISTRY,
)
OBSERVATIONS_PENDING = Gauge(
    "trialforge_observations_pending",
    "Observations received and not yet stored in Trial statuses.",
    registry=REGISTRY,
)
STORE_SECONDS = Histogram(
    "trialforge_observation_store_delay_seconds",
    "Time from a batch's receipt to its status write (what a collector waits for "
    "before it forgets it).",
    # Writes are paced (--ingest-write-interval, --ingest-writes-per-second): with
    # hundreds of trials reporting, tens of seconds.
    buckets=(*_LATENCY_BUCKETS, 30.0, 60.0, 120.0),
    registry=REGISTRY,
)
OBSERVATIONS_REJECTED = Counter(
    "trialforge_observations_rejected_total",
    "Ingest requests refused, by reason (bad_token, gap, malformed, trial_ended, ...).",
    ["reason"],
    registry=REGISTRY,
)
INGEST_SECONDS = Histogram(
    "trialforge_ingest_request_duration_seconds",
    "Time from an ingest request's arrival to its answer (receipt, not storage).",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)

# -- the control loop -----------------------------------------------------------------------
RECONCILE_SECONDS = Histogram(
    "trialforge_reconcile_duration_seconds",
    "Time to reconcile one experiment.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "trialforge_reconcile_errors_total", "Reconciles that raised.", registry=REGISTRY
)
SUGGESTION_SECONDS = Histogram(
    "trialforge_suggestion_duration_seconds",
    "Time the search engine spent suggesting one trial's parameters.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
STATUS_PATCHES = Counter(
    "trialforge_status_patches_total",
    "Status patches sent to the API server, by kind (Experiment, Trial).",
    ["kind"],
    registry=REGISTRY,
)
API_WRITES = Counter(
    "trialforge_api_writes_total",
    "Write requests the operator sent to the Kubernetes API.",
    ["resource", "verb"],
    registry=REGISTRY,
)
LEADER = Gauge(
    "trialforge_leader", "1 when this replica holds the leader Lease, else 0.", registry=REGISTRY
)

_KINDS = {"experiments": "Experiment", "trials": "Trial"}


def exported_names() -> list[str]:
    """The names of the operator's own metrics, as PromQL sees them (``_total`` etc.)."""
    out: set[str] = set()
    for metric in REGISTRY.collect():
        if not metric.name.startswith("trialforge_"):
            continue
        for sample in metric.samples:
            out.add(sample.name)
        # Series-less families (a labelled gauge with no children yet) still count.
        suffix = {"counter": "_total", "histogram": "_bucket"}.get(metric.type, "")
        out.add(metric.name + suffix)
    return sorted(out)


def status_patched(plural: str) -> None:
    STATUS_PATCHES.labels(_KINDS.get(plural, plural)).inc()


def timed_suggestions(search: Any) -> None:
    """Time a search's ``suggest`` (the engine stays free of Prometheus)."""
    suggest = search.suggest
    if getattr(suggest, "_trialforge_timed", False):
        return

    @functools.wraps(suggest)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return suggest(*args, **kwargs)
        finally:
            SUGGESTION_SECONDS.observe(time.perf_counter() - started)

    timed._trialforge_timed = True  # type: ignore[attr-defined]
    search.suggest = timed


# -- level-based experiment and trial series -------------------------------------------------

PHASES = ("Pending", "Running", "Succeeded", "Failed", "Pruned", "Cancelled")
EXPERIMENT_PHASES = ("Pending", "Running", "Suspended", "Succeeded", "Failed")
DEFAULT_SERIES_LIMIT = 10_000

_lock = threading.Lock()
_series_limit = DEFAULT_SERIES_LIMIT
# (namespace, experiment) -> the trial_metric label tuples exported for it
_trial_series: dict[tuple[str, str], set[tuple[str, str]]] = {}
_dropped: dict[tuple[str, str], set[tuple[str, str]]] = {}
_phases_seen: dict[tuple[str, str], set[str]] = {}


def set_series_limit(limit: int) -> None:
    global _series_limit
    _series_limit = max(0, int(limit))


def series_count() -> int:
    with _lock:
        return sum(len(s) for s in _trial_series.values())


def gpus_per_pod(template: Mapping[str, Any]) -> int:
    """nvidia.com/gpu a pod of this template asks for (limits, else requests)."""
    total = 0
    for container in (template.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        for part in ("limits", "requests"):
            value = (resources.get(part) or {}).get("nvidia.com/gpu")
            if value is not None:
                with contextlib.suppress(ValueError):
                    total += int(float(str(value)))
                break
    return total


def observe_experiment(
    namespace: str,
    experiment: str,
    trials: Iterable[Mapping[str, Any]],
    *,
    best: float | None,
    gpu_seconds: float,
    gpus_per_trial: int,
    experiment_phase: str | None = None,
) -> None:
    """Make the experiment's series what the reconciler just observed."""
    key = (namespace, experiment)
    counts = dict.fromkeys(PHASES, 0)
    wanted: dict[tuple[str, str], float] = {}
    running_gpus = 0
    for trial in trials:
        status = trial.get("status") or {}
        phase = status.get("phase") or "Pending"
        counts[phase] = counts.get(phase, 0) + 1
        if phase != "Running":
            continue
        running_gpus += gpus_per_trial
        name = trial["metadata"]["name"]
        for metric, summary in (status.get("metrics") or {}).items():
            value = (summary or {}).get("latest")
            if isinstance(value, int | float) and math.isfinite(value):
                wanted[(name, metric)] = float(value)
    with _lock:
        for phase, n in counts.items():
            TRIALS.labels(namespace, experiment, phase).set(n)
        _phases_seen.setdefault(key, set()).update(counts)
        if best is not None and math.isfinite(best):
            BEST_OBJECTIVE.labels(namespace, experiment).set(best)
        GPU_SECONDS.labels(namespace, experiment).set(gpu_seconds)
        RUNNING_GPUS.labels(namespace, experiment).set(running_gpus)
        if experiment_phase is not None:
            for each in EXPERIMENT_PHASES:
                current = int(each == experiment_phase)
                EXPERIMENT_PHASE.labels(namespace, experiment, each).set(current)

        exported = _trial_series.setdefault(key, set())
        dropped = _dropped.setdefault(key, set())
        for gone in exported - wanted.keys():
            TRIAL_METRIC.remove(namespace, experiment, *gone)
            exported.discard(gone)
        dropped.intersection_update(wanted)  # forget dropped series of ended trials
        total = sum(len(s) for s in _trial_series.values())
        for labels, value in sorted(wanted.items()):
            if labels not in exported:
                if total >= _series_limit:
                    if labels not in dropped:
                        dropped.add(labels)
                        TRIAL_METRIC_DROPPED.inc()
                    continue
                exported.add(labels)
                dropped.discard(labels)
                total += 1
            TRIAL_METRIC.labels(namespace, experiment, *labels).set(value)


def forget_experiment(namespace: str, experiment: str) -> None:
    """The experiment is gone: remove every series it had."""
    key = (namespace, experiment)
    with _lock:
        for labels in _trial_series.pop(key, set()):
            TRIAL_METRIC.remove(namespace, experiment, *labels)
        _dropped.pop(key, None)
        for phase in _phases_seen.pop(key, set()):
            TRIALS.remove(namespace, experiment, phase)
        for gauge in (BEST_OBJECTIVE, GPU_SECONDS, RUNNING_GPUS):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, experiment)
        for each in EXPERIMENT_PHASES:
            with contextlib.suppress(KeyError):
                EXPERIMENT_PHASE.remove(namespace, experiment, each)


def reset() -> None:
    """Forget every experiment's series (tests)."""
    for namespace, experiment in list(_trial_series):
        forget_experiment(namespace, experiment)
