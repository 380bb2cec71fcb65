"""engine/objective.py: an ended trial's outcome."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import experiment_doc
from trialforge.api import load_experiment
from trialforge.api.experiment import ExperimentSpec
from trialforge.api.observation import Observation
from trialforge.engine.objective import conclude, violations_of


def spec_of(**overrides: Any) -> ExperimentSpec:
    return load_experiment(experiment_doc(**overrides)).spec


def test_conclude_turns_an_ended_trial_into_an_outcome() -> None:
    spec = spec_of(objective={"metric": "acc", "direction": "maximize", "final": "best"})
    obs = [Observation(1, {"acc": 0.5}), Observation(2, {"acc": 0.8}), Observation(3, {"acc": 0.7})]
    assert conclude(spec, 0, obs).values == (0.8,)
    assert conclude(spec, 1, obs).reason == "Error"
    assert conclude(spec, 0, obs, failure="Timeout").reason == "Timeout"
    missing = conclude(spec, 0, [Observation(1, {"loss": 0.1})])
    assert (missing.phase, missing.reason, missing.retryable) == (
        "Failed",
        "MissingObjective",
        False,
    )
    nan = conclude(spec_of(), 0, [Observation(1, {"acc": float("nan")})])
    assert (nan.phase, nan.reason, nan.retryable) == ("Failed", "ObjectiveNotFinite", False)
    mean = spec_of(
        objective={"metric": "acc", "direction": "maximize", "final": "mean", "window": 2}
    )
    assert conclude(mean, 0, obs).values == (pytest.approx(0.75),)


def test_conclude_judges_constraints_on_the_last_values() -> None:
    spec = spec_of(
        constraints=[
            {"metric": "latency_ms", "max": 20},
            {"metric": "memory_mb", "min": 100, "max": 4000},
        ]
    )
    obs = [
        Observation(1, {"acc": 0.5, "latency_ms": 30.0, "memory_mb": 500.0}),
        Observation(2, {"acc": 0.8, "latency_ms": 18.0, "memory_mb": 600.0}),
    ]
    ok = conclude(spec, 0, obs)
    assert (ok.phase, ok.feasible) == ("Succeeded", True)
    assert ok.constraints == {"latency_ms": 18.0, "memory_mb": 600.0}
    assert violations_of(spec, ok.constraints) == (-2.0, -500.0)  # the nearer bound
    slow = conclude(spec, 0, [*obs, Observation(3, {"acc": 0.9, "latency_ms": 31.0})])
    assert (slow.phase, slow.feasible) == ("Succeeded", False)
    assert slow.values == (0.9,)  # infeasible is not failed: the sampler learns from it
    assert "latency_ms = 31 > max 20" in slow.message
    small = conclude(spec, 0, [Observation(1, {"acc": 0.5, "latency_ms": 1.0, "memory_mb": 50.0})])
    assert small.feasible is False and "memory_mb = 50 < min 100" in small.message
    missing = conclude(spec, 0, [Observation(1, {"acc": 0.5, "latency_ms": 1.0})])
    assert (missing.phase, missing.reason, missing.retryable) == (
        "Failed",
        "MissingConstraint",
        False,
    )
    assert "memory_mb" in missing.message
    plain = conclude(spec_of(), 0, obs)
    assert plain.constraints is None and plain.feasible is None
