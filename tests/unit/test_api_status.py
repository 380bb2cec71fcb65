"""The phase enums of api.status: the same strings as the status models' fields."""

from __future__ import annotations

import json
from typing import get_args

import yaml

from trialforge.api.status import (
    ACTIVE_PHASES,
    TERMINAL_PHASES,
    ExperimentPhase,
    ExperimentPhaseName,
    ExperimentStatus,
    TrialPhase,
    TrialPhaseName,
    TrialStatus,
)


def test_the_models_literals_hold_the_enums_values_in_order() -> None:
    assert get_args(TrialPhaseName) == tuple(p.value for p in TrialPhase)
    assert get_args(ExperimentPhaseName) == tuple(p.value for p in ExperimentPhase)


def test_phase_sets_partition_the_trial_phases_and_find_plain_strings() -> None:
    assert set(TrialPhase) == ACTIVE_PHASES | TERMINAL_PHASES
    assert not ACTIVE_PHASES & TERMINAL_PHASES
    assert "Running" in ACTIVE_PHASES and "Pruned" in TERMINAL_PHASES
    assert "Running" not in TERMINAL_PHASES


def test_members_are_their_strings() -> None:
    assert TrialPhase.FAILED == "Failed" and str(TrialPhase.FAILED) == "Failed"
    assert f"Trial{TrialPhase.PRUNED}" == "TrialPruned"
    assert {"Succeeded": 1}[TrialPhase.SUCCEEDED] == 1
    assert json.dumps({"phase": ExperimentPhase.SUSPENDED}) == '{"phase": "Suspended"}'


def test_status_models_take_members_or_strings_and_give_plain_strings() -> None:
    for phase in TrialPhase:
        from_member = TrialStatus(phase=phase)
        from_string = TrialStatus.model_validate({"phase": phase.value})
        assert from_member == from_string
        assert type(from_string.phase) is str and from_string.phase == phase
        wire = from_member.to_wire()
        assert wire["phase"] == phase.value and type(wire["phase"]) is str
        assert TrialStatus.model_validate(wire) == from_string
    for phase in ExperimentPhase:
        status = ExperimentStatus.model_validate({"phase": phase.value})
        assert type(status.model_dump()["phase"]) is str
        # Plain strings: yaml.safe_dump writes them (it refuses enum members).
        assert yaml.safe_dump(status.model_dump()["phase"]).startswith(phase.value)
        assert ExperimentStatus.model_validate(status.to_wire()) == status
