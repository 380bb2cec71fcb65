"""api/trial.py: the Trial resource (names, the spec's place in the design)."""

from __future__ import annotations

import pytest

from trialforge.api.trial import TrialSpec, trial_name


def test_trial_names_are_deterministic() -> None:
    assert trial_name("mnist", 3) == "mnist-3"
    assert trial_name("mnist", 3, 2) == "mnist-3-r2"


def test_trial_spec_records_its_place_in_the_design() -> None:
    spec = TrialSpec.model_validate(
        {"experiment": "x", "index": 3, "parameters": {"lr": 0.1}, "seed": 9, "role": "confirm",
         "config": "c4", "repeat": 2, "searchIndex": 4, "codeVersion": "abc"}
    )  # fmt: skip
    assert spec.role == "confirm" and spec.search_index == 4 and spec.code_version == "abc"
    with pytest.raises(ValueError):
        TrialSpec.model_validate(
            {"experiment": "x", "index": 0, "parameters": {}, "seed": 1, "role": "winner"}
        )
