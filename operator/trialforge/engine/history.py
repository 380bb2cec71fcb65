"""A trial's metric series, kept bounded: latest, best, and a downsampled history.

The history keeps the first, the last and the best point of each metric and
evenly spaced points between, at most ``limit`` per metric, so a Trial's status
stays small however long the training runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from trialforge.api.observation import Observation
from trialforge.api.status import MAX_HISTORY_POINTS

Point = dict[str, Any]  # {"step": int, "value": float, "time": float?}


def _finite(v: float | None) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def point_value(point: Mapping[str, Any]) -> float:
    if point.get("value") is None:
        return float(point.get("nonFinite") or "nan")
    return float(point["value"])


def downsample(points: Sequence[Point], limit: int, direction: str | None = None) -> list[Point]:
    if len(points) <= limit:
        return list(points)
    keep = {0, len(points) - 1}
    if direction is not None:
        finite = [i for i, p in enumerate(points) if _finite(p["value"])]
        if finite:
            pick = max if direction == "maximize" else min
            keep.add(pick(finite, key=lambda i: points[i]["value"]))
        # A non-finite point is the most telling one: never drop it.
        keep.update(i for i, p in enumerate(points) if p.get("value") is None)
    room = limit - len(keep)
    if room > 0:
        stride = (len(points) - 1) / (room + 1)
        keep.update(round(stride * k) for k in range(1, room + 1))
    return [points[i] for i in sorted(keep)][:limit]


def merge(
    history: Mapping[str, Sequence[Point]],
    observations: Iterable[Observation],
    directions: Mapping[str, str],
    limit: int = MAX_HISTORY_POINTS,
) -> dict[str, list[Point]]:
    """The history with new observations appended, each metric downsampled."""
    out = {k: list(v) for k, v in history.items()}
    for obs in observations:
        for metric, value in obs.metrics.items():
            point: Point = {"step": obs.step, "value": value}
            if not _finite(value):
                # JSON (and so the API server) has no NaN or infinity.
                point = {"step": obs.step, "value": None, "nonFinite": str(value)}
            if obs.time is not None:
                point["time"] = obs.time
            out.setdefault(metric, []).append(point)
    return {
        metric: downsample(points, limit, directions.get(metric)) for metric, points in out.items()
    }


def summarize(
    summary: Mapping[str, Mapping[str, Any]],
    observations: Iterable[Observation],
    directions: Mapping[str, str],
) -> dict[str, dict[str, Any]]:
    """Latest and best value (best only for objective metrics) and count, per metric."""
    out = {k: dict(v) for k, v in summary.items()}
    for obs in observations:
        for metric, value in obs.metrics.items():
            entry = out.setdefault(metric, {"count": 0})
            entry["latest"] = value if _finite(value) else None
            entry["step"] = obs.step
            entry["count"] = int(entry.get("count", 0)) + 1
            direction = directions.get(metric)
            if direction and _finite(value):
                best = entry.get("best")
                if best is None or (value > best if direction == "maximize" else value < best):
                    entry["best"] = value
    return out


def observations_from(history: Mapping[str, Sequence[Point]]) -> list[Observation]:
    """Observations rebuilt from a history, one per step, in step order."""
    by_step: dict[int, dict[str, float]] = {}
    times: dict[int, float] = {}
    for metric, points in history.items():
        for p in points:
            by_step.setdefault(int(p["step"]), {})[metric] = point_value(p)
            if p.get("time") is not None:
                times[int(p["step"])] = float(p["time"])
    return [Observation(s, by_step[s], times.get(s)) for s in sorted(by_step)]
