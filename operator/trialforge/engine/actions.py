"""What a plan asks an adapter to do: start a trial, stop one, finish the experiment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trialforge.api.status import ExperimentPhase, TrialPhase
from trialforge.api.trial import TrialRole


@dataclass(frozen=True)
class StartTrial:
    index: int
    attempt: int
    parameters: dict[str, Any]
    seed: int
    search_state: dict[str, Any]
    why: str  # "new" | "retry"
    role: TrialRole | str = TrialRole.SEARCH  # a str only for a role this version does not know
    config: str | None = None
    repeat: int = 0
    search_index: int | None = None
    # The warm start the sampler was told before its first suggestion (engine.warm).
    warm_start: str | None = None


@dataclass(frozen=True)
class StopTrial:
    name: str
    phase: TrialPhase  # Pruned | Cancelled | Failed (its objective went non-finite)
    reason: str
    message: str
    retryable: bool = True  # for phase Failed: may the trial run again?


@dataclass(frozen=True)
class FinishExperiment:
    phase: ExperimentPhase  # Succeeded | Failed
    reason: str  # GoalReached | BudgetExhausted | SearchSpaceExhausted | TooManyFailures | ...
    message: str


Action = StartTrial | StopTrial | FinishExperiment
