"""``trialforge export mlflow``: every trial as an MLflow run (an optional extra).

Each trial attempt becomes one run in the MLflow experiment of the same name:
its parameters as params, its metric history (every reported step) as
metrics, its final objective values as ``final.<metric>``, and its lineage as
tags (``trialforge.*``: seed, role, configuration, repeat, phase, node, GPU,
image digest, artifact, command; ``mlflow.source.git.commit`` from
spec.codeVersion).  The best trial is tagged ``trialforge.best=true`` and each
compared run carries its configuration's verdict.  Exporting again skips runs
already exported (matched by the ``trialforge.trial`` tag), so it can follow
a running experiment.

Needs ``pip install 'trialforge[mlflow]'`` (mlflow-skinny is enough; a
``sqlite:///`` tracking URI also needs SQLAlchemy and Alembic, which Optuna
already brings).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trialforge.reporting.rundata import RunData

RUN_STATUS = {
    "Succeeded": "FINISHED",
    "Failed": "FAILED",
    "Pruned": "KILLED",
    "Cancelled": "KILLED",
}
BATCH = 1000  # MLflow's limit of metrics per log_batch call


class MlflowMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class ExportResult:
    experiment_id: str
    created: list[str]  # trial names exported now
    skipped: list[str]  # already there


def _ms(ts: float | None) -> int | None:
    return None if ts is None else int(ts * 1000)


def _tag(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text[:5000]  # MLflow's tag value limit is 8000; stay well below


def _tags(data: RunData, record: Any, verdict: str | None, best: bool) -> dict[str, str]:
    """A trial's MLflow tags: its design, outcome and lineage."""
    spec = data.spec
    tags: dict[str, Any] = {
        "trialforge.experiment": data.name,
        "trialforge.trial": record.name,
        "trialforge.index": record.index,
        "trialforge.attempt": record.attempt,
        "trialforge.seed": record.seed,
        "trialforge.role": record.role or "search",
        "trialforge.config": record.config,
        "trialforge.repeat": record.repeat,
        "trialforge.phase": record.phase,
        "trialforge.reason": record.reason,
        "trialforge.codeVersion": record.code_version or spec.code_version,
        "trialforge.dataVersion": record.data_version or spec.data_version,
        "trialforge.node": record.node,
        "trialforge.gpuType": record.gpu_type,
        "trialforge.imageDigest": record.image_digest,
        "trialforge.artifactUri": record.artifact_uri,
        "trialforge.command": record.command,
        "trialforge.verdict": verdict,
        "mlflow.source.git.commit": record.code_version or spec.code_version,
        "trialforge.best": "true" if best else None,
    }
    return {k: _tag(v) for k, v in tags.items() if v is not None}


def _metrics(data: RunData, record: Any, metric: Any) -> list[Any]:
    """A trial's metric history and its final objective values, as MLflow metrics."""
    out = []
    for obs in data.observations.get(record.name, []):
        stamp = _ms(obs.time) or _ms(record.start_time) or int(time.time() * 1000)
        for key, value in obs.metrics.items():
            if math.isfinite(value):
                out.append(metric(key, float(value), stamp, int(obs.step)))
    stamp = _ms(record.completion_time) or int(time.time() * 1000)
    for objective, value in zip(data.spec.all_objectives, record.values or [], strict=False):
        out.append(metric(f"final.{objective.metric}", float(value), stamp, 0))
    return out


def export(
    data: RunData,
    tracking_uri: str,
    experiment_name: str | None = None,
    artifact_location: str | None = None,
) -> ExportResult:
    try:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MlflowMissing(
            "the MLflow export needs mlflow: pip install 'trialforge[mlflow]' (or mlflow-skinny)"
        ) from exc

    client = MlflowClient(tracking_uri=tracking_uri)
    name = experiment_name or data.name
    found = client.get_experiment_by_name(name)
    if found is None:
        experiment_id = client.create_experiment(
            name,
            artifact_location=artifact_location,
            tags={"trialforge.source": data.source, "trialforge.experiment": data.name},
        )
    else:
        experiment_id = found.experiment_id
    existing = {
        r.data.tags.get("trialforge.trial")
        for r in client.search_runs([experiment_id], max_results=50_000)
    }
    best = (data.state.get("best") or {}).get("trial")
    verdicts: dict[str, str] = {}
    for row in data.state.get("comparison") or []:
        for trial in row.get("trials") or []:
            verdicts[trial] = row.get("verdict") or row.get("role", "")
    created, skipped = [], []
    for record in data.records:
        if record.name in existing:
            skipped.append(record.name)
            continue
        tags = _tags(data, record, verdicts.get(record.name), record.name == best)
        run = client.create_run(
            experiment_id,
            start_time=_ms(record.start_time),
            tags=tags,
            run_name=record.name,
        )
        run_id = run.info.run_id
        params = [Param(k, _tag(v)[:6000]) for k, v in sorted(record.parameters.items())]
        metrics = _metrics(data, record, Metric)
        client.log_batch(run_id, params=params)
        for start in range(0, len(metrics), BATCH):
            client.log_batch(run_id, metrics=metrics[start : start + BATCH])
        status = RUN_STATUS.get(record.phase)
        if status is not None:
            client.set_terminated(run_id, status, end_time=_ms(record.completion_time))
        created.append(record.name)
    return ExportResult(experiment_id, created, skipped)


def summary(result: ExportResult, tracking_uri: str) -> Mapping[str, Any]:
    return {
        "trackingUri": tracking_uri,
        "experimentId": result.experiment_id,
        "exported": len(result.created),
        "skipped": len(result.skipped),
    }
