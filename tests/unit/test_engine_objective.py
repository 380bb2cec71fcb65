"""engine/objective.py: an ended trial's outcome."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import experiment_doc
from trialforge.api import load_experiment
from trialforge.api.experiment import ExperimentSpec
from trialforge.api.observation import Observation
from trialforge.engine.objective import conclude


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
