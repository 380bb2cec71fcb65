"""The plots of a run, as SVG: optimisation history, parallel coordinates, learning
curves, Pareto front, parameter importances, the comparison with the baseline.

Drawn with :mod:`trialforge.reporting.svg` (standard library only): the end of
``trialforge run`` imports neither matplotlib nor scikit-learn. Parameter
importances need ``optuna.importance``, which imports scikit-learn (seconds):
only ``trialforge report`` computes them (:func:`importance_scores`), and
optuna-dashboard computes its own.

Every axis carries its values (a log axis says so in its title and has its
ticks at powers of ten); pruned trials are drawn faded and dashed, failed and
cancelled ones faded and dotted, so a reader sees what the search left behind.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trialforge.api.experiment import ExperimentSpec
from trialforge.api.observation import Observation
from trialforge.engine.record import TrialRecord, latest_attempts
from trialforge.reporting.svg import FADED, FAILED, RUNNING, Figure, Scale, colour

log = logging.getLogger(__name__)

Observations = Mapping[str, Sequence[Observation]]

# How a trial that did not succeed is drawn (class names, stroke, dashes, opacity).
_FADED_STYLE: dict[str, dict[str, Any]] = {
    "Pruned": {"stroke": FADED, "stroke_dasharray": "6 3", "opacity": 0.45},
    "Failed": {"stroke": FAILED, "stroke_dasharray": "2 3", "opacity": 0.35},
    "Cancelled": {"stroke": FAILED, "stroke_dasharray": "2 3", "opacity": 0.35},
}
_ENDED = ("Succeeded", "Pruned", "Failed", "Cancelled")


def _latest(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    latest = latest_attempts(records)
    return [latest[i] for i in sorted(latest)]


def _done(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    return [r for r in _latest(records) if r.phase == "Succeeded" and r.values]


def _write(svg: str | None, path: Path) -> Path | None:
    if svg is None:
        return None
    path.write_text(svg, encoding="utf-8")
    return path


def _classes(record: TrialRecord, *extra: str) -> str:
    faded = " faded" if record.phase in _FADED_STYLE else ""
    return " ".join(("trial", record.phase.lower(), *extra)) + faded


def _better(direction: str) -> Any:
    return (lambda a, b: a > b) if direction == "maximize" else (lambda a, b: a < b)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


# -- optimisation history --------------------------------------------------------------


def history_svg(spec: ExperimentSpec, records: Sequence[TrialRecord]) -> str | None:
    """Each succeeded trial's objective by trial number, and the best so far."""
    done = _done(records)
    if not done:
        return None
    objective = spec.all_objectives[0]
    xs = [float(r.index) for r in done]
    ys = [r.values[0] for r in done if r.values]
    fig = Figure(720, 400, f"Optimisation history ({objective.direction} {objective.metric})")
    sx = Scale.for_values(xs, 70, 690, pad=0.03)
    sx.integer = True
    sy = Scale.for_values(ys, 340, 45, pad=0.05)
    fig.horizontal_axis(340, sx, "trial")
    fig.vertical_axis(70, sy, objective.metric)
    fig.text(14, 192, objective.metric, 12, transform="rotate(-90 14 192)",
             text_anchor="middle", class_="axis-title")  # fmt: skip
    better = _better(objective.direction)
    best: list[tuple[float, float]] = []
    running: float | None = None
    for x, y in zip(xs, ys, strict=True):
        if running is None or better(y, running):
            if best:
                best.append((sx(x), sy(running)))  # type: ignore[arg-type]
            running = y
        best.append((sx(x), sy(running)))
    fig.polyline(best, stroke="#dd8452", stroke_width=2, class_="best-so-far")
    for r, x, y in zip(done, xs, ys, strict=True):
        fig.circle(sx(x), sy(y), 3.5, fill="#4c72b0", class_=_classes(r), data_trial=r.name)
    fig.legend(80, 392, [("trial", {"stroke": "#4c72b0"}), ("best so far", {"stroke": "#dd8452"})])
    return fig.render()


def history(spec: ExperimentSpec, records: Sequence[Any], path: Path) -> Path | None:
    return _write(history_svg(spec, records), path)


# -- parallel coordinates ------------------------------------------------------------------


def _parameter_scale(p: Any, values: Sequence[Any], top: float, bottom: float) -> Scale:
    if p.type in ("categorical", "discrete"):
        return Scale.categorical([str(v) for v in p.values], bottom, top)
    numbers = [float(v) for v in values if _finite(v)]
    low = float(p.min) if getattr(p, "min", None) is not None else min(numbers, default=0.0)
    high = float(p.max) if getattr(p, "max", None) is not None else max(numbers, default=1.0)
    scale = Scale.for_values(numbers, bottom, top, log=bool(getattr(p, "log", False)),
                             low=low, high=high)  # fmt: skip
    scale.integer = p.type == "int"
    return scale


def _axis_title(p: Any) -> str:
    return p.name + (" (log)" if getattr(p, "log", False) else "")


def parallel_svg(spec: ExperimentSpec, records: Sequence[TrialRecord]) -> str | None:
    """A line per ended trial through its parameters' values and, once it succeeded,
    its objective (coloured by it); pruned, failed and cancelled trials faded."""
    ended = [r for r in _latest(records) if r.phase in _ENDED]
    done = [r for r in ended if r.phase == "Succeeded" and r.values]
    if len(ended) < 2 or not spec.parameters:
        return None
    objective = spec.all_objectives[0]
    n_axes = len(spec.parameters) + 1
    width = max(640, 140 * n_axes + 80)
    top, bottom = 70.0, 350.0
    fig = Figure(width, 430, f"Parallel coordinates (colour: {objective.metric})")
    xs = [70 + i * (width - 160) / max(1, n_axes - 1) for i in range(n_axes)]
    scales = [
        _parameter_scale(p, [r.parameters.get(p.name) for r in ended], top, bottom)
        for p in spec.parameters
    ]
    ys = [r.values[0] for r in done if r.values]
    objective_scale = Scale.for_values(ys, bottom, top, pad=0.02)
    titles = [_axis_title(p) for p in spec.parameters]
    titles.append(f"{objective.metric} ({objective.direction})")
    low, high = (min(ys), max(ys)) if ys else (0.0, 1.0)

    def shade(value: float) -> float:
        t = (value - low) / ((high - low) or 1.0)
        return t if objective.direction == "maximize" else 1 - t

    faded = [r for r in ended if r.phase in _FADED_STYLE]
    order = sorted(done, key=lambda r: shade(r.values[0]) if r.values else 0.0)  # best last
    for r in [*faded, *order]:
        points = []
        for x, p, scale in zip(xs, spec.parameters, scales, strict=False):
            y = scale.position(r.parameters.get(p.name))
            if y is not None:
                points.append((x, y))
        if r.phase == "Succeeded" and r.values:
            points.append((xs[-1], objective_scale(r.values[0])))
            style: dict[str, Any] = {"stroke": colour(shade(r.values[0])), "opacity": 0.85,
                                     "stroke_width": 1.6}  # fmt: skip
        else:
            style = {**_FADED_STYLE[r.phase], "stroke_width": 1.3}
        params = ", ".join(f"{k}={v}" for k, v in r.parameters.items())
        value = f" {objective.metric}={r.values[0]:.4g}" if r.values else ""
        fig.add(
            "<polyline "
            + f"points='{' '.join(f'{x:.1f},{y:.1f}' for x, y in points)}' fill='none' "
            + " ".join(f'{k.replace("_", "-")}="{v}"' for k, v in style.items())
            + f" class='{_classes(r)}' data-trial='{html.escape(r.name)}'"
            + f" data-phase='{r.phase}'><title>{html.escape(f'{r.name} ({r.phase}): {params}')}"
            + f"{html.escape(value)}</title></polyline>"
        )
    for i, (x, title) in enumerate(zip(xs, titles, strict=True)):
        scale = scales[i] if i < len(scales) else objective_scale
        fig.vertical_axis(x, scale, title, side="left" if i else "right")
        fig.text(x, top - 14, title, 12, text_anchor="middle", class_="axis-title",
                 font_weight="600")  # fmt: skip
    fig.legend(
        70,
        410,
        [
            (f"succeeded (colour: {objective.metric})", {"stroke": colour(1.0)}),
            ("pruned", {k: v for k, v in _FADED_STYLE["Pruned"].items()}),
            ("failed / cancelled", {k: v for k, v in _FADED_STYLE["Failed"].items()}),
        ],
    )
    return fig.render()


def parallel_coordinates(spec: ExperimentSpec, records: Sequence[Any], path: Path) -> Path | None:
    return _write(parallel_svg(spec, records), path)


# -- learning curves ---------------------------------------------------------------------


def curve(
    spec: ExperimentSpec, record: TrialRecord, observations: Observations | None = None
) -> list[tuple[int, float]]:
    """The first objective by step: from the attempt's observations, else its history."""
    metric = spec.all_objectives[0].metric
    seen = (observations or {}).get(record.name) or ()
    points = {o.step: o.metrics[metric] for o in seen if metric in o.metrics}
    if not points:
        points = dict(record.intermediate)
    return [(int(s), float(v)) for s, v in sorted(points.items()) if _finite(v)]


def learning_curves_svg(
    spec: ExperimentSpec, records: Sequence[TrialRecord], observations: Observations | None = None
) -> str | None:
    """Every trial's objective by step; a pruned trial marked with an x where it stopped."""
    objective = spec.all_objectives[0]
    curves = [(r, curve(spec, r, observations)) for r in _latest(records)]
    curves = [(r, c) for r, c in curves if c]
    if not curves:
        return None
    steps = [float(s) for _, c in curves for s, _ in c]
    values = [v for _, c in curves for _, v in c]
    fig = Figure(760, 440, f"Learning curves ({objective.direction} {objective.metric} by step)")
    sx = Scale.for_values(steps, 75, 730, pad=0.02)
    sx.integer = True
    sy = Scale.for_values(values, 370, 45, pad=0.04)
    fig.horizontal_axis(370, sx, "step")
    fig.vertical_axis(75, sy, objective.metric)
    fig.text(16, 208, objective.metric, 12, transform="rotate(-90 16 208)",
             text_anchor="middle", class_="axis-title")  # fmt: skip
    finals = [r.values[0] for r, _ in curves if r.phase == "Succeeded" and r.values]
    low, high = (min(finals), max(finals)) if finals else (0.0, 1.0)
    best = None
    if finals:
        pick = max if objective.direction == "maximize" else min
        best = pick(
            (r for r, _ in curves if r.phase == "Succeeded" and r.values),
            key=lambda r: r.values[0],  # type: ignore[index]
        ).name

    def rank(r: TrialRecord) -> float:
        if r.phase != "Succeeded" or not r.values:
            return -1.0
        t = (r.values[0] - low) / ((high - low) or 1.0)
        return t if objective.direction == "maximize" else 1 - t

    for r, points in sorted(curves, key=lambda rc: (rc[0].name == best, rank(rc[0]))):
        pixels = [(sx(float(s)), sy(v)) for s, v in points]
        if r.phase == "Succeeded":
            style: dict[str, Any] = {"stroke": colour(rank(r)), "stroke_width": 1.6, "opacity": 0.9}
            if r.name == best:
                style["stroke_width"] = 3
        elif r.phase in _FADED_STYLE:
            style = {**_FADED_STYLE[r.phase], "stroke_width": 1.4}
        else:  # running (or pending with a history)
            style = {"stroke": RUNNING, "stroke_width": 1.6, "stroke_dasharray": "1 0"}
        extra = ("best",) if r.name == best else ()
        last_step, last_value = points[-1]
        tip = f"{r.name} ({r.phase}): last step {last_step}, {objective.metric} {last_value:.4g}"
        if len(pixels) == 1:
            fig.circle(*pixels[0], 2.5, fill=style["stroke"], class_=_classes(r, *extra),
                       data_trial=r.name)  # fmt: skip
        else:
            fig.add(
                f"<polyline points='{' '.join(f'{x:.1f},{y:.1f}' for x, y in pixels)}' "
                "fill='none' "
                + " ".join(f'{k.replace("_", "-")}="{v}"' for k, v in style.items())
                + f" class='{_classes(r, *extra)}' data-trial='{html.escape(r.name)}'"
                + f" data-phase='{r.phase}'><title>{html.escape(tip)}</title></polyline>"
            )
        x, y = pixels[-1]
        if r.phase == "Pruned":
            fig.cross(x, y, 4.5, stroke="#555", class_="stop pruned", data_trial=r.name,
                      data_step=points[-1][0])  # fmt: skip
        elif r.phase in ("Failed", "Cancelled"):
            fig.circle(x, y, 3.5, fill="none", stroke=FAILED, class_=f"stop {r.phase.lower()}",
                       data_trial=r.name, data_step=points[-1][0])  # fmt: skip
        elif r.phase == "Running":
            fig.circle(x, y, 3, fill=RUNNING, class_="stop running", data_trial=r.name,
                       data_step=points[-1][0])  # fmt: skip
    fig.legend(
        80,
        425,
        [
            ("succeeded (best: thick)", {"stroke": colour(1.0)}),
            ("pruned (x: where it stopped)", {k: v for k, v in _FADED_STYLE["Pruned"].items()}),
            ("failed / cancelled", {k: v for k, v in _FADED_STYLE["Failed"].items()}),
            ("running", {"stroke": RUNNING}),
        ],
    )
    return fig.render()


def learning_curves(
    spec: ExperimentSpec,
    records: Sequence[Any],
    path: Path,
    observations: Observations | None = None,
) -> Path | None:
    return _write(learning_curves_svg(spec, records, observations), path)


# -- Pareto front --------------------------------------------------------------------------


def pareto_svg(
    spec: ExperimentSpec, records: Sequence[TrialRecord], front: Sequence[Any]
) -> str | None:
    objectives = spec.all_objectives
    done = _done(records)
    if len(objectives) < 2 or not done:
        return None
    on_front = {b.name for b in front}
    fig = Figure(620, 480, "Pareto front")
    xs = [r.values[0] for r in done if r.values]
    ys = [r.values[1] for r in done if r.values]
    sx = Scale.for_values(xs, 75, 590, pad=0.05)
    sy = Scale.for_values(ys, 410, 45, pad=0.05)
    fig.horizontal_axis(410, sx, f"{objectives[0].metric} ({objectives[0].direction})")
    fig.vertical_axis(75, sy, objectives[1].metric)
    title = f"{objectives[1].metric} ({objectives[1].direction})"
    fig.text(16, 228, title, 12, transform="rotate(-90 16 228)", text_anchor="middle",
             class_="axis-title")  # fmt: skip
    for r in done:
        if r.name not in on_front and r.values:
            fig.circle(sx(r.values[0]), sy(r.values[1]), 3, fill="#999999",
                       class_=_classes(r), data_trial=r.name)  # fmt: skip
    pts = sorted((b.values[0], b.values[1], b.name) for b in front)
    fig.polyline([(sx(a), sy(b)) for a, b, _ in pts], stroke="#c44e52", stroke_width=1.5,
                 class_="front")  # fmt: skip
    for a, b, name in pts:
        fig.circle(sx(a), sy(b), 4, fill="#c44e52", class_="trial succeeded front", data_trial=name)
    fig.legend(80, 468, [("trial", {"stroke": "#999999"}), ("Pareto front", {"stroke": "#c44e52"})])
    return fig.render()


def pareto(
    spec: ExperimentSpec, records: Sequence[Any], front: Sequence[Any], path: Path
) -> Path | None:
    return _write(pareto_svg(spec, records, front), path)


# -- parameter importances -----------------------------------------------------------------


def importance_scores(study: Any, spec: ExperimentSpec) -> dict[str, float] | None:
    """PED-ANOVA importances of a single-objective search (imports optuna.importance,
    hence scikit-learn: only the report asks)."""
    completed = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(completed) < 3 or len(spec.parameters) < 2 or spec.multi_objective:
        return None
    import optuna.importance

    try:
        # Named, not Optuna's default: that was fANOVA before Optuna 5 (it needs
        # scikit-learn, which trialforge does not install) and PED-ANOVA since.
        return dict(
            optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
            )
        )
    except (RuntimeError, ValueError) as exc:  # too few distinct values to fit
        log.info("no parameter importances: %s", exc)
        return None


def importances_svg(scores: Mapping[str, float] | None) -> str | None:
    if not scores:
        return None
    names = list(scores)
    height = 90 + 26 * len(names)
    fig = Figure(640, height, "Parameter importances (PED-ANOVA)")
    sx = Scale.for_values([0.0, *scores.values()], 150, 610, low=0.0)
    for i, name in enumerate(names):
        y = 40 + 26 * i
        fig.text(142, y + 14, name, 11, text_anchor="end")
        fig.rect(150, y + 3, max(1.0, sx(scores[name]) - 150), 17, fill="#55a868",
                 class_="bar", data_parameter=name)  # fmt: skip
    fig.horizontal_axis(height - 48, sx, "importance")
    return fig.render()


def importances(study: Any, spec: ExperimentSpec, path: Path) -> Path | None:
    return _write(importances_svg(importance_scores(study, spec)), path)


# -- against the baseline ------------------------------------------------------------------

VERDICT_COLOURS = {"better": "#55a868", "worse": "#c44e52", "inconclusive": "#8c8c8c"}


def comparison_svg(rows: Sequence[dict[str, Any]]) -> str | None:
    """Each candidate's difference from the baseline with its Welch interval, by verdict."""
    base = next((r for r in rows if r.get("role") == "baseline"), None)
    shown = [r for r in rows if r.get("role") == "candidate" and r.get("difference") is not None]
    if base is None or not shown:
        return None
    height = 120 + 30 * len(shown)
    fig = Figure(
        720, height, f"Against the baseline ({base.get('direction')} {base.get('metric')})"
    )
    values = [0.0]
    for r in shown:
        values += [v for v in (r.get("difference"), r.get("ciLow"), r.get("ciHigh")) if _finite(v)]
    sx = Scale.for_values(values, 220, 690, pad=0.05)
    for i, r in enumerate(shown):
        y = 50 + 30 * i
        tint = VERDICT_COLOURS.get(r.get("verdict", ""), "#8c8c8c")
        fig.text(212, y + 4, f"{r['arm']} ({r.get('verdict')})", 11, text_anchor="end")
        low, high = r.get("ciLow"), r.get("ciHigh")
        if _finite(low) and _finite(high):
            fig.line(sx(low), y, sx(high), y, stroke=tint, stroke_width=4, class_="interval")
        fig.circle(sx(r["difference"]), y, 4.5, fill=tint, class_=f"difference {r.get('verdict')}",
                   data_arm=r["arm"])  # fmt: skip
    fig.line(sx(0.0), 35, sx(0.0), height - 60, stroke="#333", class_="zero")
    alpha = float(base.get("alpha", 0.05))
    fig.horizontal_axis(height - 58, sx, f"{base.get('metric')}: candidate - {base['arm']} "
                        f"({1 - alpha:.0%} Welch interval)")  # fmt: skip
    return fig.render()


def comparison(rows: Sequence[dict[str, Any]], path: Path) -> Path | None:
    return _write(comparison_svg(rows), path)


# -- all of them ---------------------------------------------------------------------------


def _run_observations(out: Path, records: Sequence[TrialRecord]) -> dict[str, list[Observation]]:
    from trialforge.local.rundir import RunDirectory

    directory = RunDirectory(out)
    if not directory.journal_path.exists():
        return {}
    return {r.name: directory.load_observations(r.name) for r in _latest(records)}


def write_all(
    spec: ExperimentSpec,
    records: Sequence[Any],
    study: Any,
    front: Sequence[Any],
    out: Path,
    observations: Observations | None = None,
) -> list[Path]:
    """The end-of-run plots, as SVG files in ``out`` (a run directory: each trial's
    observations are read from its journal unless given). No importances: they
    import scikit-learn (``trialforge report`` has them)."""
    del study  # importances are the report's
    if observations is None:
        observations = _run_observations(out, records)
    made = [
        history(spec, records, out / "history.svg"),
        parallel_coordinates(spec, records, out / "parallel.svg"),
        learning_curves(spec, records, out / "learning-curves.svg", observations),
        pareto(spec, records, front, out / "pareto.svg"),
    ]
    return [p for p in made if p is not None]
