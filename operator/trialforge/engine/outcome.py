"""What the trials came to: a trial's final phase, a configuration's outcome, the best
configuration or the Pareto front, the search's end, and the experiment's finish.

Functions of what they are given: the spec, the search, the trials' outcomes
and the configurations the planner assembled.  The planner keeps the state
between plans (the ledger, the configurations the search was told the end of).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trialforge.api.experiment import ExperimentSpec
from trialforge.api.status import ACTIVE_PHASES, TERMINAL_PHASES, ExperimentPhase, TrialPhase
from trialforge.engine.actions import FinishExperiment, StopTrial
from trialforge.engine.design import Slot, arm_runs, search_config, search_limit
from trialforge.engine.objective import better, dominates, is_feasible, mean_values, meets_goal
from trialforge.engine.record import TrialRecord
from trialforge.engine.search import Search

if TYPE_CHECKING:
    from trialforge.engine.ledger import Ledger, Merged


@dataclass(frozen=True)
class Best:
    """The best configuration: with repeats, ``values`` are means over its runs
    that succeeded and ``name`` is the first of those runs."""

    name: str
    index: int
    parameters: Mapping[str, Any]
    values: tuple[float, ...]
    config: str | None = None
    runs: int = 1
    artifact_uri: str | None = None


@dataclass
class Config:
    """A search configuration's runs and, once known, its outcome."""

    k: int
    runs: dict[int, TrialRecord]  # repeat -> latest attempt
    phase: TrialPhase | None = None  # final phase, None while it may still change
    values: tuple[float, ...] | None = None  # means over the runs that succeeded
    succeeded: list[TrialRecord] = field(default_factory=list)
    # spec.constraints' metrics (means over the runs that succeeded) and whether
    # they keep every bound; an infeasible configuration is never the best.
    constraints: dict[str, float] | None = None
    feasible: bool = True


def final_phase(
    view: TrialRecord, retries: int, stopping: Mapping[str, StopTrial]
) -> TrialPhase | None:
    """The trial's final phase, or None while it may still run (or be retried).

    ``retries`` is spec.trial.retries; ``stopping`` the trials this plan stops.
    """
    if view.name in stopping:
        return stopping[view.name].phase
    if view.phase not in TERMINAL_PHASES:
        return None
    if view.phase == TrialPhase.FAILED and view.retryable and view.attempt < retries:
        return None
    return TrialPhase(view.phase)


def config_outcome(
    spec: ExperimentSpec,
    search: Search,
    k: int,
    runs: Mapping[int, TrialRecord],
    outcome: Mapping[int, TrialPhase | None],
) -> Config:
    """Configuration k's outcome from its runs' outcomes (trial index -> final phase)."""
    cfg = Config(k, dict(runs))
    finals = {r: outcome.get(v.index) for r, v in runs.items()}
    first = runs.get(0)
    pruned = search.should_prune(k) or (first is not None and finals.get(0) == TrialPhase.PRUNED)
    cfg.succeeded = [
        runs[r] for r in sorted(runs) if finals[r] == TrialPhase.SUCCEEDED and runs[r].values
    ]
    if pruned:
        if all(v.phase not in ACTIVE_PHASES or finals[r] is not None
               for r, v in runs.items()):  # fmt: skip
            cfg.phase = TrialPhase.PRUNED
        return cfg
    if len(runs) < spec.repeats or any(f is None for f in finals.values()):
        return cfg
    means = mean_values((v.values for v in cfg.succeeded), len(spec.all_objectives))
    if means is not None:
        cfg.values = means
        cfg.phase = TrialPhase.SUCCEEDED
        if spec.constraints:
            cfg.constraints = _mean_constraints(cfg.succeeded)
            cfg.feasible = is_feasible(spec, cfg.constraints)
        return cfg
    ended = finals.values()
    cfg.phase = TrialPhase.FAILED if TrialPhase.FAILED in ended else next(iter(ended))
    return cfg


def _mean_constraints(runs: list[TrialRecord]) -> dict[str, float] | None:
    """The constrained metrics' means over ``runs``; None when a run lacks them."""
    rows = [r.constraints for r in runs]
    if not rows or any(row is None for row in rows):
        return None
    keys = set(rows[0] or {})
    if any(set(row or {}) != keys for row in rows):
        return None
    return {k: sum(float(row[k]) for row in rows if row) / len(rows) for k in sorted(keys)}


def keep_best(spec: ExperimentSpec, top: Config | None, cfg: Config) -> Config | None:
    """The best of ``top`` and ``cfg`` (a configuration that just ended) with one objective;
    an infeasible configuration is never the best."""
    if (
        cfg.phase != TrialPhase.SUCCEEDED
        or cfg.values is None
        or spec.multi_objective
        or not cfg.feasible
    ):
        return top
    direction = spec.all_objectives[0].direction
    if (
        top is None
        or better(cfg.values[0], top.values[0], direction)  # type: ignore[index]
        or (cfg.values[0] == top.values[0] and cfg.k < top.k)  # type: ignore[index]
    ):
        return cfg
    return top


def best_and_front(
    spec: ExperimentSpec,
    configs: Mapping[int, Config],
    by_slot: Mapping[Slot, TrialRecord],
    outcome: Mapping[int, TrialPhase | None],
    best_final: Config | None,
) -> tuple[Best | None, list[Best]]:
    """The best configuration (one objective) and the Pareto front (several).

    ``best_final`` is the best search configuration the search was told the
    end of, kept as they come (:func:`keep_best`).
    """
    directions = [o.direction for o in spec.all_objectives]
    if spec.arms:
        done = _arm_bests(by_slot, outcome, len(directions))
    elif len(directions) == 1:
        # Only a configuration the search was told the end of has succeeded,
        # and the planner keeps the best of those as they come.
        if best_final is None:
            return None, []
        best = _best_of(best_final)
        return best, [best]
    else:
        done = [_best_of(configs[k]) for k in sorted(configs) if _succeeded(configs[k])]
    if not done:
        return None, []
    if len(directions) == 1:
        top = done[0]
        for candidate in done[1:]:
            if better(candidate.values[0], top.values[0], directions[0]):
                top = candidate
        return top, [top]
    front = [a for a in done if not any(dominates(b.values, a.values, directions) for b in done)]
    front.sort(key=lambda b: b.index)
    return None, front


def _succeeded(cfg: Config) -> bool:
    """Succeeded and feasible: a candidate for the Pareto front."""
    return cfg.phase == TrialPhase.SUCCEEDED and cfg.values is not None and cfg.feasible


def _best_of(cfg: Config) -> Best:
    """A configuration that succeeded as a :class:`Best`: named by its first run that did."""
    first = cfg.succeeded[0]
    return Best(first.name, first.index, first.parameters, cfg.values,  # type: ignore[arg-type]
                search_config(cfg.k), len(cfg.succeeded), first.artifact_uri)  # fmt: skip


def _arm_bests(
    by_slot: Mapping[Slot, TrialRecord], outcome: Mapping[int, TrialPhase | None], width: int
) -> list[Best]:
    """Every arm (and the baseline) with runs that succeeded, with their means."""
    done: list[Best] = []
    for name, views in arm_runs(by_slot).items():
        ok = [v for v in views if outcome.get(v.index) == TrialPhase.SUCCEEDED and v.values]
        means = mean_values((v.values for v in ok), width)
        if means is not None:
            first = ok[0]
            runs = sum(1 for v in ok if v.values and len(v.values) == width)
            done.append(
                Best(first.name, first.index, first.parameters, means, name, runs,
                     first.artifact_uri)
            )  # fmt: skip
    return done


def search_end(
    spec: ExperimentSpec,
    search: Search,
    ledger: Ledger,
    configs: Merged,
    best: Best | None,
) -> tuple[str, str] | None:
    """(reason, message) once the search is over, else None."""
    objectives = spec.all_objectives
    if best is not None and len(objectives) == 1 and meets_goal(best.values[0], objectives[0]):
        return (
            "GoalReached",
            f"trial {best.name} reached {objectives[0].metric} = {best.values[0]:g} "
            f"(goal {objectives[0].goal:g})",
        )
    limit = search_limit(spec, search)
    settled, live = configs.settled, configs.live
    done = ledger.done_below(limit) + sum(
        1 for k, c in live.items() if k < limit and c.phase is not None and k not in settled
    )
    if done < limit:
        return None
    succeeded = ledger.configs_succeeded + sum(
        1 for k, c in live.items() if c.phase == TrialPhase.SUCCEEDED and k not in settled
    )
    if succeeded == 0:
        return "NoTrialSucceeded", f"all {limit} trials ended and none succeeded"
    reason = "BudgetExhausted" if limit == spec.budget.max_trials else "SearchSpaceExhausted"
    what = "trials" if spec.repeats == 1 else f"configurations ({spec.repeats} runs each)"
    return reason, f"all {limit} {what} ended; {succeeded} succeeded"


def top_configs(spec: ExperimentSpec, configs: Mapping[int, Config]) -> list[str]:
    """The confirmation's configurations: the best ``confirm.top`` of the search."""
    assert spec.confirm is not None
    direction = spec.all_objectives[0].direction
    done = [
        c for c in configs.values() if c.phase == TrialPhase.SUCCEEDED and c.values and c.feasible
    ]
    sign = -1.0 if direction == "maximize" else 1.0
    done.sort(key=lambda c: (sign * c.values[0], c.k))  # type: ignore[index]
    return [search_config(c.k) for c in done[: spec.confirm.top]]


def ended_counts(ledger: Ledger, live_outcome: Mapping[int, TrialPhase | None]) -> tuple[int, int]:
    """How many trials failed and how many succeeded, for good: (failed, succeeded)."""
    failed = ledger.failed + sum(1 for o in live_outcome.values() if o == TrialPhase.FAILED)
    succeeded = ledger.succeeded + sum(
        1 for o in live_outcome.values() if o == TrialPhase.SUCCEEDED
    )
    return failed, succeeded


def finished(
    spec: ExperimentSpec,
    *,
    total: int,
    failed: int,
    succeeded: int,
    outcome: Mapping[int, TrialPhase | None],
    wanted: Iterator[Slot],
    by_slot: Mapping[Slot, TrialRecord],
    search_end: tuple[str, str] | None,
    now: float,
    started_at: float | None,
) -> FinishExperiment | None:
    """How the experiment finishes now, or None while it goes on.

    ``wanted`` are the runs the design calls for now (:func:`design.wanted`),
    read only when the design could be complete.
    """
    limit_failed = spec.budget.max_failed_trials
    if limit_failed is not None and failed > limit_failed:
        return FinishExperiment(
            ExperimentPhase.FAILED,
            "TooManyFailures",
            f"{failed} trials failed, more than maxFailedTrials ({limit_failed})",
        )
    deadline = spec.budget.deadline_seconds
    past_deadline = deadline is not None and started_at is not None and now - started_at >= deadline
    # A goal reached wins over the deadline, as it always did; the rest of
    # the design (arms, baseline, confirmation) must have run to finish.
    complete = (spec.arms or search_end is not None) and all(
        slot in by_slot and outcome.get(by_slot[slot].index) is not None for slot in wanted
    )
    goal = search_end is not None and search_end[0] == "GoalReached"
    if past_deadline and not (goal and complete):
        phase = ExperimentPhase.SUCCEEDED if succeeded else ExperimentPhase.FAILED
        return FinishExperiment(
            phase, "DeadlineExceeded", f"the deadline ({spec.budget.deadline}) passed"
        )
    if search_end is not None and search_end[0] == "NoTrialSucceeded":
        return FinishExperiment(ExperimentPhase.FAILED, *search_end)
    if not complete:
        return None
    return _completed(spec, total, succeeded, search_end)


def _completed(
    spec: ExperimentSpec, total: int, succeeded: int, search_end: tuple[str, str] | None
) -> FinishExperiment:
    """The finish of a design that ran to its end."""
    if spec.arms:
        if succeeded == 0:
            return FinishExperiment(
                ExperimentPhase.FAILED,
                "NoTrialSucceeded",
                f"all {total} trials ended and none succeeded",
            )
        arms = len(spec.arms) + (spec.baseline is not None)
        return FinishExperiment(
            ExperimentPhase.SUCCEEDED,
            "Completed",
            f"all {total} trials of {arms} arms ended; {succeeded} succeeded",
        )
    assert search_end is not None
    reason, message = search_end
    if spec.confirm is not None:
        message += (
            f"; the best {spec.confirm.top} and the baseline confirmed with "
            f"{spec.confirm.repeats} fresh runs each"
            if spec.baseline is not None
            else f"; the best {spec.confirm.top} confirmed with "
            f"{spec.confirm.repeats} fresh runs each"
        )
    return FinishExperiment(ExperimentPhase.SUCCEEDED, reason, message)
