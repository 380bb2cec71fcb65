"""How a finished trial's reported series becomes its outcome."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from trialforge.api.experiment import ExperimentSpec, Objective
from trialforge.api.observation import Observation


@dataclass(frozen=True)
class Outcome:
    """What a trial's end means: its phase, why, and its objective values."""

    phase: str  # Succeeded | Failed
    reason: str
    message: str
    values: tuple[float, ...] | None = None
    retryable: bool = True
    # spec.constraints' metrics (their last values) and whether all bounds hold.
    constraints: dict[str, float] | None = None
    feasible: bool | None = None


def series(observations: Sequence[Observation], metric: str) -> list[tuple[int, float]]:
    return [(o.step, o.metrics[metric]) for o in observations if metric in o.metrics]


def final_value(points: Sequence[tuple[int, float]], objective: Objective) -> float | None:
    if not points:
        return None
    values = [v for _, v in points]
    if objective.final == "last":
        return values[-1]
    if objective.final == "best":
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return values[-1]
        return max(finite) if objective.direction == "maximize" else min(finite)
    window = values[-objective.window :]
    return sum(window) / len(window)


def conclude(
    spec: ExperimentSpec,
    exit_code: int | None,
    observations: Sequence[Observation],
    failure: str | None = None,
) -> Outcome:
    """The outcome of a trial whose process (or Job) has ended.

    ``failure`` is a reason the runtime already knows (Timeout, a Kubernetes
    reason such as DeadlineExceeded or OOMKilled); it wins over the exit code.
    """
    if failure is not None:
        return Outcome("Failed", failure, f"trial ended: {failure}")
    if exit_code not in (0, None):
        return Outcome("Failed", "Error", f"trainer exited with code {exit_code}")
    values: list[float] = []
    for objective in spec.all_objectives:
        value = final_value(series(observations, objective.metric), objective)
        if value is None:
            return Outcome(
                "Failed",
                "MissingObjective",
                f"the trainer never reported {objective.metric!r}",
                retryable=False,
            )
        if not math.isfinite(value):
            return Outcome(
                "Failed",
                "ObjectiveNotFinite",
                f"objective {objective.metric!r} is {value} — the training diverged",
                retryable=False,
            )
        values.append(value)
    constraints: dict[str, float] = {}
    for c in spec.constraints or []:
        points = series(observations, c.metric)
        if not points:
            return Outcome(
                "Failed",
                "MissingConstraint",
                f"the trainer never reported {c.metric!r}, which spec.constraints bounds",
                retryable=False,
            )
        value = points[-1][1]
        if not math.isfinite(value):
            return Outcome(
                "Failed",
                "ConstraintNotFinite",
                f"constrained metric {c.metric!r} is {value}",
                retryable=False,
            )
        constraints[c.metric] = value
    if not spec.constraints:
        return Outcome("Succeeded", "Completed", "trial completed", tuple(values))
    violations = violations_of(spec, constraints)
    feasible = violations is not None and all(v <= 0 for v in violations)
    message = "trial completed"
    if not feasible:
        message = f"infeasible: {describe_violations(spec, constraints)}"
    return Outcome(
        "Succeeded", "Completed", message, tuple(values), constraints=constraints,
        feasible=feasible,
    )  # fmt: skip


def violations_of(
    spec: ExperimentSpec, constraints: Mapping[str, float] | None
) -> tuple[float, ...] | None:
    """Each constraint's violation (> 0: violated), in spec order; None when a value is missing."""
    if not spec.constraints:
        return None
    if constraints is None or any(c.metric not in constraints for c in spec.constraints):
        return None
    return tuple(c.violation(float(constraints[c.metric])) for c in spec.constraints)


def is_feasible(spec: ExperimentSpec, constraints: Mapping[str, float] | None) -> bool:
    """Whether the metric values keep every bound (always, without constraints)."""
    if not spec.constraints:
        return True
    violations = violations_of(spec, constraints)
    return violations is not None and all(v <= 0 for v in violations)


def describe_violations(spec: ExperimentSpec, constraints: Mapping[str, float]) -> str:
    """The bounds ``constraints`` violate, in words (latency_ms = 31 > max 20)."""
    out: list[str] = []
    for c in spec.constraints or []:
        value = constraints.get(c.metric)
        if value is None:
            out.append(f"{c.metric} not reported")
        elif c.max is not None and value > c.max:
            out.append(f"{c.metric} = {value:g} > max {c.max:g}")
        elif c.min is not None and value < c.min:
            out.append(f"{c.metric} = {value:g} < min {c.min:g}")
    return ", ".join(out)


def mean_values(rows: Iterable[Sequence[float] | None], width: int) -> tuple[float, ...] | None:
    """The objectives' means over a configuration's runs that succeeded (rows of
    ``width`` values each; others are left out); None when there is none."""
    full = [row for row in rows if row and len(row) == width]
    if not full:
        return None
    return tuple(sum(col) / len(col) for col in zip(*full, strict=True))


def better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "maximize" else a < b


def meets_goal(value: float, objective: Objective) -> bool:
    if objective.goal is None:
        return False
    return value >= objective.goal if objective.direction == "maximize" else value <= objective.goal


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Pareto dominance: a is no worse anywhere and strictly better somewhere."""
    no_worse = all(
        (x >= y if d == "maximize" else x <= y) for x, y, d in zip(a, b, directions, strict=True)
    )
    strictly = any(better(x, y, d) for x, y, d in zip(a, b, directions, strict=True))
    return no_worse and strictly
