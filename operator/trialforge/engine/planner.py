"""The planner: given the experiment and its trials as they are now, what happens next.

Level-based, like a controller-runtime reconcile: :meth:`Planner.plan` looks at
the whole world each time and returns the actions that move it toward the spec.
Calling it again with the same world returns the same actions, so an adapter
that crashed half way through carrying them out simply calls it again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trialforge.api.experiment import ExperimentSpec
from trialforge.api.status import ACTIVE_PHASES, TERMINAL_PHASES
from trialforge.engine.objective import better, dominates, meets_goal
from trialforge.engine.search import Search


@dataclass(frozen=True)
class TrialView:
    """One trial attempt as an adapter observed it."""

    name: str
    index: int
    attempt: int
    phase: str
    parameters: Mapping[str, Any]
    seed: int = 0
    values: tuple[float, ...] | None = None
    intermediate: Mapping[int, float] = field(default_factory=dict)
    reason: str | None = None
    retryable: bool = True
    search_state: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class StartTrial:
    index: int
    attempt: int
    parameters: dict[str, Any]
    seed: int
    search_state: dict[str, Any]
    why: str  # "new" | "retry"


@dataclass(frozen=True)
class StopTrial:
    name: str
    phase: str  # Pruned | Cancelled | Failed (its objective went non-finite)
    reason: str
    message: str
    retryable: bool = True  # for phase Failed: may the trial run again?


@dataclass(frozen=True)
class FinishExperiment:
    phase: str  # Succeeded | Failed
    reason: str  # GoalReached | BudgetExhausted | SearchSpaceExhausted | TooManyFailures | ...
    message: str


Action = StartTrial | StopTrial | FinishExperiment


@dataclass(frozen=True)
class Best:
    name: str
    index: int
    parameters: Mapping[str, Any]
    values: tuple[float, ...]


@dataclass(frozen=True)
class Plan:
    actions: list[Action]
    counts: dict[str, int]
    best: Best | None
    pareto_front: list[Best]
    finished: FinishExperiment | None

    def of(self, kind: type) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]


class Planner:
    """Decides for one experiment; holds its :class:`Search` between calls."""

    def __init__(self, spec: ExperimentSpec, name: str) -> None:
        self.spec = spec
        self.name = name
        self.search = Search(spec, name)

    def plan(
        self,
        trials: Sequence[TrialView],
        *,
        now: float,
        started_at: float | None = None,
        suspended: bool = False,
    ) -> Plan:
        spec = self.spec
        budget = spec.budget
        latest = _latest_attempts(trials)
        self._sync(latest)

        actions: list[Action] = []
        # Trials stopped this round no longer hold a slot, but they are not
        # terminal in the world yet; count them as such for the decisions below.
        stopping: dict[str, StopTrial] = {}
        metric = spec.all_objectives[0].metric
        for view in latest.values():
            if view.phase != "Running":
                continue
            diverged = _non_finite(view.intermediate)
            if diverged is not None:
                # The search stops a non-finite series too, but this is a failure
                # of the training, not the pruner's judgement: fail it, for good.
                step, value = diverged
                stopping[view.name] = StopTrial(
                    view.name,
                    "Failed",
                    "ObjectiveNotFinite",
                    f"objective {metric!r} is {value} at step {step} — the training diverged",
                    retryable=False,
                )
            elif self.search.should_prune(view.index):
                stopping[view.name] = StopTrial(
                    view.name,
                    "Pruned",
                    "EarlyStopped",
                    f"{spec.early_stopping.algorithm} stopped it: its "
                    f"{spec.all_objectives[0].metric} trails the other trials",
                )

        outcome = {i: self._final_phase(v, stopping) for i, v in latest.items()}
        counts = _counts(trials, latest, stopping)
        best, front = self._best(latest)

        finished = self._finished(latest, outcome, best, now, started_at)
        if finished is not None:
            for view in latest.values():
                if view.phase in ACTIVE_PHASES and view.name not in stopping:
                    stopping[view.name] = StopTrial(
                        view.name,
                        "Cancelled",
                        finished.reason,
                        f"experiment finished: {finished.message}",
                    )
            actions.extend(stopping.values())
            actions.append(finished)
            return Plan(actions, counts, best, front, finished)
        actions.extend(stopping.values())
        if suspended:
            return Plan(actions, counts, best, front, None)

        active = sum(
            1 for v in latest.values() if v.phase in ACTIVE_PHASES and v.name not in stopping
        )
        slots = budget.parallelism - active
        # Retries first: they finish configurations already paid for.
        for index in sorted(latest):
            view = latest[index]
            if slots <= 0:
                break
            if outcome[index] is None and view.phase == "Failed":
                actions.append(
                    StartTrial(
                        index,
                        view.attempt + 1,
                        dict(view.parameters),
                        view.seed,
                        dict(view.search_state or {}),
                        "retry",
                    )
                )
                slots -= 1
        limit = self._limit()
        # Indices the search suggested earlier but no trial records yet (a crash
        # between deciding and creating) come first, with the same parameters.
        next_index = 0
        while slots > 0:
            while next_index in latest:
                next_index += 1
            if next_index >= limit:
                break
            s = self.search.suggest(next_index)
            actions.append(StartTrial(s.index, 0, s.parameters, s.seed, s.state, "new"))
            next_index += 1
            slots -= 1
        return Plan(actions, counts, best, front, None)

    # -- helpers ---------------------------------------------------------------------

    def _limit(self) -> int:
        capacity = self.search.capacity()
        limit = self.spec.budget.max_trials
        return min(limit, capacity) if capacity is not None else limit

    def _sync(self, latest: Mapping[int, TrialView]) -> None:
        # Trials the study already knows the end of cannot change it any more:
        # skipping them keeps a plan's sync to the trials still in play rather
        # than every trial so far.
        pending = [i for i in sorted(latest) if not self.search.is_finished(i)]
        for index in pending:
            view = latest[index]
            self.search.restore(index, view.parameters, view.search_state)
        for index in pending:
            view = latest[index]
            if view.intermediate:
                self.search.report(index, view.intermediate)
            final = self._final_phase(view, {})
            if final is not None:
                self.search.finish(index, final, view.values)

    def _final_phase(self, view: TrialView, stopping: Mapping[str, StopTrial]) -> str | None:
        """The configuration's final phase, or None while it may still run (or be retried)."""
        if view.name in stopping:
            return stopping[view.name].phase
        if view.phase not in TERMINAL_PHASES:
            return None
        if view.phase == "Failed" and view.retryable and view.attempt < self.spec.trial.retries:
            return None
        return view.phase

    def _finished(
        self,
        latest: Mapping[int, TrialView],
        outcome: Mapping[int, str | None],
        best: Best | None,
        now: float,
        started_at: float | None,
    ) -> FinishExperiment | None:
        spec = self.spec
        failed = sum(1 for o in outcome.values() if o == "Failed")
        succeeded = sum(1 for o in outcome.values() if o == "Succeeded")
        limit_failed = spec.budget.max_failed_trials
        if limit_failed is not None and failed > limit_failed:
            return FinishExperiment(
                "Failed",
                "TooManyFailures",
                f"{failed} trials failed, more than maxFailedTrials ({limit_failed})",
            )
        objectives = spec.all_objectives
        if best is not None and len(objectives) == 1 and meets_goal(best.values[0], objectives[0]):
            return FinishExperiment(
                "Succeeded",
                "GoalReached",
                f"trial {best.name} reached {objectives[0].metric} = {best.values[0]:g} "
                f"(goal {objectives[0].goal:g})",
            )
        deadline = spec.budget.deadline_seconds
        if deadline is not None and started_at is not None and now - started_at >= deadline:
            phase = "Succeeded" if succeeded else "Failed"
            return FinishExperiment(
                phase, "DeadlineExceeded", f"the deadline ({spec.budget.deadline}) passed"
            )
        limit = self._limit()
        done = sum(1 for i, o in outcome.items() if i < limit and o is not None)
        if done >= limit:
            reason = (
                "BudgetExhausted" if limit == spec.budget.max_trials else "SearchSpaceExhausted"
            )
            if succeeded == 0:
                return FinishExperiment(
                    "Failed", "NoTrialSucceeded", f"all {limit} trials ended and none succeeded"
                )
            return FinishExperiment(
                "Succeeded", reason, f"all {limit} trials ended; {succeeded} succeeded"
            )
        return None

    def _best(self, latest: Mapping[int, TrialView]) -> tuple[Best | None, list[Best]]:
        directions = [o.direction for o in self.spec.all_objectives]
        succeeded = [
            v
            for v in latest.values()
            if v.phase == "Succeeded" and v.values is not None and len(v.values) == len(directions)
        ]
        if not succeeded:
            return None, []
        if len(directions) == 1:
            top = succeeded[0]
            for candidate in succeeded[1:]:
                if better(candidate.values[0], top.values[0], directions[0]):
                    top = candidate
            best = Best(top.name, top.index, top.parameters, tuple(top.values))
            return best, [best]
        done = [Best(v.name, v.index, v.parameters, tuple(v.values)) for v in succeeded]
        front = [
            a for a in done if not any(dominates(b.values, a.values, directions) for b in done)
        ]
        front.sort(key=lambda b: b.index)
        return None, front


def _non_finite(intermediate: Mapping[int, float]) -> tuple[int, float] | None:
    for step in sorted(intermediate):
        if not math.isfinite(intermediate[step]):
            return step, intermediate[step]
    return None


def _latest_attempts(trials: Sequence[TrialView]) -> dict[int, TrialView]:
    latest: dict[int, TrialView] = {}
    for view in trials:
        current = latest.get(view.index)
        if current is None or view.attempt > current.attempt:
            latest[view.index] = view
    return latest


def _counts(
    trials: Sequence[TrialView],
    latest: Mapping[int, TrialView],
    stopping: Mapping[str, StopTrial],
) -> dict[str, int]:
    counts = dict.fromkeys(("pending", "running", "succeeded", "failed", "pruned", "cancelled"), 0)
    for view in latest.values():
        phase = stopping[view.name].phase if view.name in stopping else view.phase
        counts[phase.lower()] += 1
    counts["retried"] = sum(1 for v in trials if v.attempt > 0)
    counts["total"] = len(latest)
    return counts
