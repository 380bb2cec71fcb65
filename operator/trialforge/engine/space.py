"""The search space: our parameter models as Optuna distributions and as a grid."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from trialforge.api.experiment import (
    CategoricalParameter,
    DiscreteParameter,
    ExperimentSpec,
    FloatParameter,
    IntParameter,
    Parameter,
)


def distribution(p: Parameter) -> BaseDistribution:
    if isinstance(p, FloatParameter):
        return FloatDistribution(p.min, p.max, log=p.log, step=p.step)
    if isinstance(p, IntParameter):
        return IntDistribution(p.min, p.max, log=p.log, step=p.step)
    if isinstance(p, CategoricalParameter | DiscreteParameter):
        return CategoricalDistribution(list(p.values))
    raise TypeError(f"unknown parameter type {type(p).__name__}")


def distributions(parameters: Sequence[Parameter]) -> dict[str, BaseDistribution]:
    return {p.name: distribution(p) for p in parameters}


def grid_values(p: Parameter) -> list[Any]:
    """Every value a grid search visits for one parameter."""
    if isinstance(p, CategoricalParameter | DiscreteParameter):
        return list(p.values)
    if isinstance(p, IntParameter):
        return list(range(p.min, p.max + 1, p.step))
    if isinstance(p, FloatParameter) and p.step is not None:
        count = math.floor((p.max - p.min) / p.step + 1e-9) + 1
        # Rounded so 0.1 + 2*0.1 prints as 0.3 in commands and reports.
        return [round(p.min + i * p.step, 12) for i in range(count)]
    raise ValueError(f"parameter {p.name!r} has no finite grid")


def grid(parameters: Sequence[Parameter]) -> dict[str, list[Any]]:
    return {p.name: grid_values(p) for p in parameters}


def grid_size(parameters: Sequence[Parameter]) -> int:
    return math.prod(len(v) for v in grid(parameters).values())


def conditional_grid(spec: ExperimentSpec) -> list[dict[str, Any]]:
    """Every valid configuration of a conditional space, in a fixed order: each
    parameter branches over its grid values only where it is active."""
    points: list[dict[str, Any]] = [{}]
    for p in spec.parameters:
        values = grid_values(p)
        out: list[dict[str, Any]] = []
        for point in points:
            if p.name in spec.active(point):
                out.extend({**point, p.name: v} for v in values)
            else:
                out.append(point)
        points = out
    return points


def point_key(parameters: Mapping[str, Any]) -> tuple[tuple[str, str, Any], ...]:
    """A configuration as a hashable key (1 and True stay different choices)."""

    def typed(v: Any) -> tuple[str, Any]:
        # A number read back from the API server may come as 1 where 1.0 was written.
        if isinstance(v, int | float) and not isinstance(v, bool):
            return "number", float(v)
        return type(v).__name__, v

    return tuple(sorted((k, *typed(v)) for k, v in parameters.items()))
