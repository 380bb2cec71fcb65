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
from trialforge.engine.record import TrialRecord, latest_attempts

log = logging.getLogger(__name__)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _done(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    latest = latest_attempts(records)
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
    return _save(fig, path)


def importances(study: optuna.Study, spec: ExperimentSpec, path: Path) -> Path | None:
    completed = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(completed) < 3 or len(spec.parameters) < 2 or spec.multi_objective:
        return None
    try:
        # Named, not Optuna's default: that was fANOVA before Optuna 5 (it needs
        # scikit-learn, which trialforge does not install) and PED-ANOVA since.
        scores = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
        )
    except (RuntimeError, ValueError) as exc:  # too few distinct values to fit
        log.info("no parameter importances: %s", exc)
        return None
    names = list(scores)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * len(names)))
    ax.barh(names, [scores[n] for n in names], color="#55a868")
    ax.set_xlabel("importance (PED-ANOVA)")
    ax.set_title("Parameter importances")
    return _save(fig, path)


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
    return _save(fig, path)


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
        parallel_coordinates(spec, records, out / "parallel.png"),
    ]
    return [p for p in made if p is not None]


def _parameter_axis(p: Any, values: Sequence[Any]) -> tuple[list[float], list[str] | None]:
    """Values of one parameter on a 0..1 axis (and tick labels for categories)."""
    if p.type in ("categorical",) or any(isinstance(v, str | bool) for v in values):
        choices = list(getattr(p, "values", sorted({str(v) for v in values})))
        index = {repr(c): i for i, c in enumerate(choices)}
        span = max(1, len(choices) - 1)
        return [index.get(repr(v), 0) / span for v in values], [str(c) for c in choices]
    import math

    numbers = [float(v) for v in values]
    low = float(getattr(p, "min", min(numbers)))
    high = float(getattr(p, "max", max(numbers)))
    if getattr(p, "log", False) and low > 0:
        numbers, low, high = [math.log10(v) for v in numbers], math.log10(low), math.log10(high)
    span = (high - low) or 1.0
    return [(v - low) / span for v in numbers], None


def parallel_coordinates(spec: ExperimentSpec, records: Sequence[Any], path: Path) -> Path | None:
    """One line per succeeded trial through its parameters and its objective, coloured by it."""
    done = _done(records)
    if len(done) < 2:
        return None
    objective = spec.all_objectives[0]
    ys = [r.values[0] for r in done]
    columns: list[list[float]] = []
    labels: list[str] = []
    ticks: list[list[str] | None] = []
    for p in spec.parameters:
        axis, names = _parameter_axis(p, [r.parameters.get(p.name) for r in done])
        columns.append(axis)
        labels.append(p.name + (" (log)" if getattr(p, "log", False) else ""))
        ticks.append(names)
    low, high = min(ys), max(ys)
    columns.append([(y - low) / ((high - low) or 1.0) for y in ys])
    labels.append(objective.metric)
    ticks.append(None)
    cmap = plt.get_cmap("viridis" if objective.direction == "maximize" else "viridis_r")
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(labels)), 4.5))
    xs = list(range(len(labels)))
    order = sorted(range(len(done)), key=lambda i: ys[i] if objective.direction == "maximize"
                   else -ys[i])  # fmt: skip
    for i in order:  # the best drawn last, on top
        colour = cmap((ys[i] - low) / ((high - low) or 1.0))
        ax.plot(xs, [col[i] for col in columns], color=colour, alpha=0.75, linewidth=1.2)
    ax.set_xticks(xs, labels)
    ax.set_yticks([])
    for x, names in zip(xs, ticks, strict=True):
        ax.axvline(x, color="#bbbbbb", linewidth=0.8, zorder=0)
        if names:
            span = max(1, len(names) - 1)
            for j, name in enumerate(names):
                ax.annotate(name, (x, j / span), fontsize=7, xytext=(3, 0),
                            textcoords="offset points", va="center")  # fmt: skip
    ax.annotate(f"{high:.4g}", (xs[-1], 1.0), fontsize=7, xytext=(3, 0),
                textcoords="offset points", va="center")  # fmt: skip
    ax.annotate(f"{low:.4g}", (xs[-1], 0.0), fontsize=7, xytext=(3, 0),
                textcoords="offset points", va="center")  # fmt: skip
    ax.set_title(f"Parallel coordinates (colour: {objective.metric})")
    return _save(fig, path)


VERDICT_COLOURS = {"better": "#55a868", "worse": "#c44e52", "inconclusive": "#8c8c8c"}


def comparison(rows: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Each candidate's difference from the baseline with its Welch interval, by verdict."""
    base = next((r for r in rows if r.get("role") == "baseline"), None)
    shown = [r for r in rows if r.get("role") == "candidate" and r.get("difference") is not None]
    if base is None or not shown:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.45 * len(shown)))
    for y, r in enumerate(reversed(shown)):
        colour = VERDICT_COLOURS.get(r.get("verdict", ""), "#8c8c8c")
        low, high = r.get("ciLow"), r.get("ciHigh")
        if low is not None and high is not None:
            ax.plot([low, high], [y, y], color=colour, linewidth=3, solid_capstyle="butt")
        ax.plot([r["difference"]], [y], "o", color=colour)
    ax.axvline(0.0, color="#333333", linewidth=0.8)
    ax.set_yticks(range(len(shown)), [f"{r['arm']} ({r.get('verdict')})" for r in reversed(shown)])
    alpha = float(base.get("alpha", 0.05))
    ax.set_xlabel(
        f"{base.get('metric')}: candidate - {base['arm']} ({1 - alpha:.0%} Welch interval)"
    )
    ax.set_title(f"Against the baseline ({base.get('direction')} {base.get('metric')})")
    return _save(fig, path)
