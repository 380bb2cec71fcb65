"""The Trial resource: one configuration's life, owned by its Experiment."""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import Field

from trialforge.api.base import WireModel
from trialforge.api.experiment import ObjectMeta as _ExperimentMeta
from trialforge.api.status import TrialStatus


class TrialRole(enum.StrEnum):
    """What a trial runs for; each member is the string TrialSpec.role holds."""

    SEARCH = "search"  # a configuration of the search
    BASELINE = "baseline"  # spec.baseline
    ARM = "arm"  # an arm of spec.arms
    CONFIRM = "confirm"  # a fresh run of a top configuration, or the baseline, after the search


# TrialSpec.role's type: the enum's values as a Literal, for the reasons
# api.status gives for TrialPhaseName (tests/unit/test_api_trial.py holds them equal).
TrialRoleName = Literal["search", "baseline", "arm", "confirm"]


class TrialMeta(_ExperimentMeta):
    # Trial names carry the index and attempt, so they are longer than experiment names.
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)


class TrialSpec(WireModel):
    experiment: str
    index: int = Field(ge=0, description="Which configuration of the experiment (0-based).")
    attempt: int = Field(default=0, ge=0, description="0 for the first run, n for the n-th retry.")
    parameters: dict[str, Any]
    seed: int = Field(ge=0, le=2**32 - 1)
    search_state: dict[str, Any] | None = Field(
        default=None,
        description="What the search engine needs to rebuild its state after a restart.",
    )
    role: TrialRoleName | None = Field(
        default=None,
        description="What the run is for: a search configuration, the baseline, an arm of a "
        "comparison, or a confirmation run after the search. Unset: search.",
    )
    config: str | None = Field(
        default=None,
        max_length=63,
        description="The configuration it runs: c<k> (search configuration k), baseline, "
        "or an arm's name.",
    )
    repeat: int | None = Field(
        default=None, ge=0, description="Which run of its configuration (0-based)."
    )
    search_index: int | None = Field(
        default=None, ge=0, description="The search configuration (Optuna trial number)."
    )
    warm_start: str | None = Field(
        default=None,
        max_length=1024,
        description="The warm start's source the sampler was told before the experiment's "
        "first suggestion (spec.warmStart), with how many of its trials.",
    )
    code_version: str | None = Field(
        default=None, max_length=256, description="spec.codeVersion of the experiment."
    )
    data_version: str | None = Field(
        default=None, max_length=256, description="spec.dataVersion of the experiment."
    )


class Trial(WireModel):
    api_version: Literal["trialforge.io/v1alpha1"] = "trialforge.io/v1alpha1"
    kind: Literal["Trial"] = "Trial"
    metadata: TrialMeta
    spec: TrialSpec
    status: TrialStatus | None = None


def trial_name(experiment: str, index: int, attempt: int = 0) -> str:
    """Deterministic, so a crash between deciding and creating cannot duplicate a trial."""
    base = f"{experiment}-{index}"
    return base if attempt == 0 else f"{base}-r{attempt}"
