"""The trial role enum of api.trial: the same strings as TrialSpec.role."""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import ValidationError

from trialforge.api.trial import TrialRole, TrialRoleName, TrialSpec, trial_name


def test_the_role_literal_holds_the_enums_values_in_order() -> None:
    assert get_args(TrialRoleName) == tuple(r.value for r in TrialRole)


def spec_with(role: object) -> TrialSpec:
    return TrialSpec.model_validate(
        {"experiment": "x", "index": 0, "parameters": {}, "seed": 1, "role": role}
    )


@pytest.mark.parametrize("role", list(TrialRole))
def test_trial_spec_round_trips_a_role_as_its_string(role: TrialRole) -> None:
    from_member = spec_with(role)
    from_string = spec_with(role.value)
    assert from_member == from_string and from_string.role == role
    wire = from_member.to_wire()
    assert wire["role"] == role.value and type(wire["role"]) is str
    assert TrialSpec.model_validate(wire) == from_string


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(ValidationError, match="role"):
        spec_with("explore")


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
