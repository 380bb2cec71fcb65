"""PNG plots of a run: optimisation history, parameter importances, Pareto front."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna

from trialforge.api.experiment import ExperimentSpec

log = logging.getLogger(__name__)


def _done(records: Sequence[Any]) -> list[Any]:
    latest: dict[int, Any] = {}
    for r in records:
        if r.index not in latest or r.attempt > latest[r.index].attempt:
            latest[r.index] = r
    return [
        latest[i] for i in sorted(latest) if latest[i].phase == "Succeeded" and latest[i].values
    ]


def history(spec: ExperimentSpec, records: Sequence[Any], path: Path) -> Path | None:
    done = _done(records)
    if not done:
        return None
    objective = spec.all_objectives[0]
    xs = [r.index for r in done]
    ys = [r.values[0] for r in done]
    best, running = [], None
    for y in ys:
        if running is None or (y > running if objective.direction == "maximize" else y < running):
            running = y
        best.append(running)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(xs, ys, s=18, label="trial", color="#4c72b0")
    ax.step(xs, best, where="post", color="#dd8452", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(objective.metric)
    ax.set_title(f"Optimisation history ({objective.direction} {objective.metric})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def importances(study: optuna.Study, spec: ExperimentSpec, path: Path) -> Path | None:
    completed = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(completed) < 3 or len(spec.parameters) < 2 or spec.multi_objective:
        return None
    try:
        scores = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as exc:  # too few distinct values to fit
        log.info("no parameter importances: %s", exc)
        return None
    names = list(scores)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * len(names)))
    ax.barh(names, [scores[n] for n in names], color="#55a868")
    ax.set_xlabel("importance (fANOVA)")
    ax.set_title("Parameter importances")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def pareto(
    spec: ExperimentSpec, records: Sequence[Any], front: Sequence[Any], path: Path
) -> Path | None:
    objectives = spec.all_objectives
    done = _done(records)
    if len(objectives) < 2 or not done:
        return None
    on_front = {b.name for b in front}
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(
        [r.values[0] for r in done if r.name not in on_front],
        [r.values[1] for r in done if r.name not in on_front],
        s=16,
        color="#999999",
        label="trial",
    )
    pts = sorted((b.values[0], b.values[1]) for b in front)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="#c44e52", label="Pareto front")
    ax.set_xlabel(f"{objectives[0].metric} ({objectives[0].direction})")
    ax.set_ylabel(f"{objectives[1].metric} ({objectives[1].direction})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_all(
    spec: ExperimentSpec,
    records: Sequence[Any],
    study: optuna.Study,
    front: Sequence[Any],
    out: Path,
) -> list[Path]:
    made = [
        history(spec, records, out / "history.png"),
        importances(study, spec, out / "importances.png"),
        pareto(spec, records, front, out / "pareto.png"),
    ]
    return [p for p in made if p is not None]
