"""A trial's metric series, kept bounded: latest, best, and a downsampled history.

The history keeps the first, the last and the best point of each metric and
evenly spaced points between, at most ``limit`` per metric, so a Trial's status
stays small however long the training runs.  A trial keeps its objectives and at
most ``MAX_TRIAL_METRICS`` other metrics (the first reported), so it stays small
however many metrics it reports.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from trialforge.api.experiment import ExperimentSpec
from trialforge.api.observation import Observation
from trialforge.api.status import MAX_HISTORY_POINTS, MAX_TRIAL_METRICS

Point = dict[str, Any]  # {"step": int, "value": float, "time": float?}


_NUMBERS = (int, float)  # a tuple: ``int | float`` would build a union on every call


def _finite(v: float | None) -> bool:
    return isinstance(v, _NUMBERS) and math.isfinite(v)


def point_value(point: Mapping[str, Any]) -> float:
    if point.get("value") is None:
        return float(point.get("nonFinite") or "nan")
    return float(point["value"])


def _step(point: Mapping[str, Any]) -> int:
    return int(point["step"])


def _select(
    steps: Sequence[int],
    values: Sequence[float | None],
    limit: int,
    direction: str | None,
    tail: int,
) -> list[int]:
    """The indices to keep (sorted), at most ``limit``; see :func:`downsample`."""
    n = len(steps)
    if n <= limit:
        return list(range(n))
    tail = max(1, min(tail, limit - 2))
    must: list[int] = [0, *range(n - tail, n)]
    if direction is not None:
        best: int | None = None
        bad: list[int] = []
        maximize = direction == "maximize"
        for i, v in enumerate(values):
            if v is None or not math.isfinite(v):
                bad.append(i)
            elif best is None or (v > values[best] if maximize else v < values[best]):  # type: ignore[operator]
                best = i
        if best is not None:
            must.append(best)
        # A non-finite point is the most telling one: keep the first few.
        must += bad[: limit // 4]
    keep: list[int] = []
    for i in must:  # in priority order, never more than the limit
        if i not in keep and len(keep) < limit:
            keep.append(i)
    room = limit - len(keep)
    if room <= 0:
        return sorted(keep)
    chosen = set(keep)
    if steps[-1] > steps[0] and all(a <= b for a, b in itertools.pairwise(steps)):
        # Evenly spaced steps; each target takes the nearest point.
        span = steps[-1] - steps[0]
        for k in range(1, room + 1):
            target = steps[0] + span * k / (room + 1)
            j = min(bisect.bisect_left(steps, target), n - 1)
            if j > 0 and target - steps[j - 1] <= steps[j] - target:
                j -= 1
            chosen.add(j)
    spare = limit - len(chosen)
    if spare > 0:  # collisions (or steps out of order): fill evenly by position
        free = [i for i in range(n) if i not in chosen]
        stride = len(free) / spare
        chosen.update(free[int(stride * k + stride / 2)] for k in range(spare))
    return sorted(chosen)


def downsample(
    points: Sequence[Point], limit: int, direction: str | None = None, tail: int = 1
) -> list[Point]:
    """At most ``limit`` points: the first, the last ``tail`` (for a mean of the last
    k values), the best (with a direction), non-finite ones, and points evenly
    spaced *in steps* between, so that merging again and again (the ingest merges
    every batch into an already downsampled history) keeps the spacing even."""
    if len(points) <= limit:
        return list(points)
    steps = [_step(p) for p in points]
    values = [p.get("value") for p in points]
    return [points[i] for i in _select(steps, values, limit, direction, tail)]


def _point(step: int, value: float, time: float | None) -> Point:
    point: Point = {"step": step, "value": value}
    if not math.isfinite(value):
        # JSON (and so the API server) has no NaN or infinity.
        point = {"step": step, "value": None, "nonFinite": str(value)}
    if time is not None:
        point["time"] = time
    return point


def kept_metrics(
    kept: Iterable[str], new: Mapping[str, Any], objectives: Iterable[str]
) -> list[str]:
    """The metrics a trial keeps after ``new`` arrived: those it keeps already, then the
    new ones in the order reported, the objectives always and at most
    ``MAX_TRIAL_METRICS`` others."""
    names = list(dict.fromkeys(kept))
    objective = set(objectives)
    room = MAX_TRIAL_METRICS - sum(1 for m in names if m not in objective)
    seen = set(names)
    for metric in new:
        if metric in seen:
            continue
        if metric in objective:
            names.append(metric)
        elif room > 0:
            names.append(metric)
            room -= 1
    return names


def merge(
    history: Mapping[str, Sequence[Point]],
    observations: Iterable[Observation],
    directions: Mapping[str, str],
    limit: int = MAX_HISTORY_POINTS,
    tails: Mapping[str, int] | None = None,
) -> dict[str, list[Point]]:
    """The history with new observations appended, each metric downsampled; new
    points at or below a step already kept supersede the kept points from there
    on (a run resumed after a disruption, see :func:`continued`).

    ``tails`` says how many last points of a metric must stay (an objective whose
    final value is the mean of its last k values).  New points become dicts only
    when they are kept (a batch of thousands keeps about a hundred)."""
    new: dict[str, list[tuple[int, float, float | None]]] = {}
    for obs in observations:
        for metric, value in obs.metrics.items():
            new.setdefault(metric, []).append((obs.step, float(value), obs.time))
    tails = tails or {}
    out: dict[str, list[Point]] = {}
    for metric in kept_metrics(history, new, directions):
        old = list(history.get(metric) or [])
        added = new.get(metric) or []
        if old and added:
            # A run after a disruption reports again from the step its
            # checkpoint reached (or from the start): its points supersede the
            # earlier run's from that step on, so the history repeats no step.
            low = min(s for s, _, _ in added)
            if any(_step(p) >= low for p in old):
                old = [p for p in old if _step(p) < low]
        steps = [_step(p) for p in old] + [s for s, _, _ in added]
        values: list[float | None] = [p.get("value") for p in old]
        values += [v if math.isfinite(v) else None for _, v, _ in added]
        keep = _select(steps, values, limit, directions.get(metric), tails.get(metric, 1))
        k = len(old)
        out[metric] = [old[i] if i < k else _point(*added[i - k]) for i in keep]
    return out


def summarize(
    summary: Mapping[str, Mapping[str, Any]],
    observations: Iterable[Observation],
    directions: Mapping[str, str],
) -> dict[str, dict[str, Any]]:
    """Latest and best value (best only for objective metrics) and count, per metric."""
    out = {k: dict(v) for k, v in summary.items()}
    series: dict[str, list[tuple[int, float]]] = {}
    for obs in observations:
        for metric, value in obs.metrics.items():
            series.setdefault(metric, []).append((obs.step, value))
    for metric in kept_metrics(out, series, directions):
        points = series.get(metric)
        if not points:
            continue
        entry = out.setdefault(metric, {"count": 0})
        step, value = points[-1]
        entry["latest"] = value if _finite(value) else None
        entry["step"] = step
        entry["count"] = int(entry.get("count", 0)) + len(points)
        direction = directions.get(metric)
        if direction:
            finite = [v for _, v in points if _finite(v)]
            if finite:
                pick = max if direction == "maximize" else min
                best = entry.get("best")
                entry["best"] = pick(finite) if best is None else pick(best, pick(finite))
    return out


def rules(spec: ExperimentSpec) -> tuple[dict[str, str], dict[str, int]]:
    """How a trial's history keeps its objectives: which way each improves (its best
    point stays) and how many last points stay (its ``window`` when its final value
    is the mean of the last k).  The ingest and the local runtime keep it alike."""
    objectives = spec.all_objectives
    directions = {o.metric: o.direction for o in objectives}
    tails = {o.metric: o.window for o in objectives if o.final == "mean"}
    return directions, tails


def merge_metric(
    points: Sequence[Point],
    observations: Iterable[Observation],
    metric: str,
    directions: Mapping[str, str],
    tails: Mapping[str, int],
    limit: int = MAX_HISTORY_POINTS,
) -> list[Point]:
    """One metric's history with new observations appended, as :func:`merge` keeps it."""
    new = [
        Observation(o.step, {metric: o.metrics[metric]}, o.time)
        for o in observations
        if metric in o.metrics
    ]
    return merge({metric: points}, new, directions, limit, tails).get(metric, [])


def by_step(points: Sequence[Point]) -> dict[int, float]:
    """A metric's history as the planner and its pruner hear it: value by step."""
    return {int(p["step"]): point_value(p) for p in points}


def observations_from(history: Mapping[str, Sequence[Point]]) -> list[Observation]:
    """Observations rebuilt from a history, one per step, in step order."""
    at_step: dict[int, dict[str, float]] = {}
    times: dict[int, float] = {}
    for metric, points in history.items():
        for p in points:
            at_step.setdefault(int(p["step"]), {})[metric] = point_value(p)
            if p.get("time") is not None:
                times[int(p["step"])] = float(p["time"])
    return [Observation(s, at_step[s], times.get(s)) for s in sorted(at_step)]


def continued(observations: Iterable[Observation]) -> list[Observation]:
    """Observations of a trial's runs, in the order reported, as one history.

    A run after a disruption reports from the step its checkpoint reached (or
    from the start): a step at or below one already seen supersedes the
    earlier run's observations from that step on (an equal step takes the
    later values), as :func:`merge` keeps a history.  Within one run the steps
    only grow, and nothing changes.
    """
    out: list[Observation] = []
    for obs in observations:
        while out and out[-1].step > obs.step:
            out.pop()
        if out and out[-1].step == obs.step:
            obs = Observation(obs.step, {**out.pop().metrics, **obs.metrics}, obs.time)
        out.append(obs)
    return out
