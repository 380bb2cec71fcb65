"""The status builder: what both runtimes write back about an experiment and its trials.

A plan becomes the experiment's :class:`~trialforge.api.status.ExperimentStatus`
(the cluster's ``status``, a local run's ``state.json``) and an outcome or a
stop becomes a trial's status fields, here and nowhere else, so a cluster
Experiment and a local run say the same things in the same words.  Trial
status fields use the Trial resource's wire names; a local record takes them
with :meth:`~trialforge.engine.record.TrialRecord.with_status`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from trialforge.api.experiment import ExperimentSpec
from trialforge.api.status import (
    MAX_PARETO_FRONT,
    BestTrial,
    Condition,
    ExperimentStatus,
    TrialCounts,
)
from trialforge.engine.design import planned_trials
from trialforge.engine.objective import Outcome
from trialforge.engine.planner import Best, FinishExperiment, Plan, StopTrial
from trialforge.engine.record import rfc3339

FINISHED_PHASES = frozenset({"Succeeded", "Failed"})


# -- a trial -------------------------------------------------------------------------


def outcome_status(outcome: Outcome) -> dict[str, Any]:
    """A trial's status fields for the outcome of its ended process or Job."""
    out: dict[str, Any] = {
        "phase": outcome.phase,
        "reason": outcome.reason,
        "message": outcome.message,
    }
    if outcome.values:
        out["values"] = list(outcome.values)
        out["objective"] = outcome.values[0]
    if not outcome.retryable:
        out["retryable"] = False
    if outcome.constraints is not None:
        out["constraints"] = dict(outcome.constraints)
        out["feasible"] = outcome.feasible
    return out


def stop_status(action: StopTrial, now: float) -> dict[str, Any]:
    """A trial's status fields once the planner stopped it (pruned, cancelled, diverged)."""
    out: dict[str, Any] = {
        "phase": action.phase,
        "reason": action.reason,
        "message": action.message,
        "completionTime": rfc3339(now),
    }
    if not action.retryable:
        out["retryable"] = False
    return out


# -- the experiment --------------------------------------------------------------------


def experiment_phase(spec: ExperimentSpec, plan: Plan | None) -> str:
    """The Experiment's phase, as its status and the exporter show it (``plan`` None:
    nothing was planned yet)."""
    if plan is not None and plan.finished is not None:
        return plan.finished.phase
    if spec.suspend:
        return "Suspended"
    return "Running" if plan is not None and plan.counts["total"] else "Pending"


def _summary(spec: ExperimentSpec, plan: Plan | None, phase: str) -> tuple[str, str]:
    """(reason, message) of the experiment's status."""
    finished = plan.finished if plan is not None else None
    running = plan.counts["running"] + plan.counts["pending"] if plan is not None else 0
    if finished is not None:
        return finished.reason, finished.message
    if phase == "Suspended":
        message = "spec.suspend is true: no new trials"
        if spec.suspend_policy == "Pause" and running:
            message += f"; {running} trials paused"
        elif running:
            message += f"; {running} running trials may finish"
        return "Suspended", message
    if phase == "Running":
        return "Running", f"{running} trials running"
    return "Starting", "no trial has started yet"


def best_trial(best: Best) -> BestTrial:
    """The best configuration (or a member of the Pareto front) as the status shows it."""
    return BestTrial(
        trial=best.name,
        parameters=dict(best.parameters),
        value=best.values[0] if len(best.values) == 1 else None,
        values=list(best.values),
        config=best.config,
        runs=best.runs,
        artifact_uri=best.artifact_uri,
    )


ENDED_COUNTS = ("succeeded", "failed", "pruned", "cancelled")


def progress_of(spec: ExperimentSpec, counts: Mapping[str, Any]) -> tuple[int, int]:
    """(trials ended, trials the design plans at most): the experiment's progress."""
    return sum(int(counts.get(k) or 0) for k in ENDED_COUNTS), planned_trials(spec)


def spread_front(front: Sequence[Best], limit: int) -> list[Best]:
    """At most ``limit`` members of a Pareto front, spread along it, in the front's order.

    NSGA-II's crowding distance picks them: each objective's two ends first
    (the front has at most 16 objectives, so 32 ends), then the members with
    the most room around them, ties by index.  The status lists these;
    ``paretoFrontSize`` counts the whole front.
    """
    if len(front) <= limit:
        return list(front)
    n = len(front)
    room = [0.0] * n
    for m in range(min(len(b.values) for b in front)):
        order = sorted(range(n), key=lambda i: (front[i].values[m], front[i].index))
        room[order[0]] = room[order[-1]] = math.inf
        span = front[order[-1]].values[m] - front[order[0]].values[m]
        if span <= 0 or not math.isfinite(span):
            continue
        for a, i, b in zip(order, order[1:], order[2:], strict=False):
            room[i] += (front[b].values[m] - front[a].values[m]) / span
    keep = sorted(range(n), key=lambda i: (-room[i], front[i].index))[:limit]
    return [front[i] for i in sorted(keep)]


def experiment_status(
    spec: ExperimentSpec,
    plan: Plan | None,
    *,
    started_at: float,
    completed_at: float | None = None,
    gpu_seconds: float = 0.0,
    generation: int | None = None,
    conditions: Sequence[Mapping[str, Any]] = (),
    now: float,
) -> ExperimentStatus:
    """The experiment's status for ``plan`` (None: before the first plan).

    ``completed_at`` is when it finished (kept from an earlier status; ``now``
    when it finishes with this plan), ``conditions`` the ones the last status
    carried (a condition keeps its transition time while its status holds).
    """
    phase = experiment_phase(spec, plan)
    reason, message = _summary(spec, plan, phase)
    finished = plan.finished if plan is not None else None
    best = best_trial(plan.best) if plan is not None and plan.best is not None else None
    front = plan.pareto_front if plan is not None and spec.multi_objective else None
    shown = spread_front(front, MAX_PARETO_FRONT) if front else None
    return ExperimentStatus(
        phase=phase,  # type: ignore[arg-type]
        reason=reason,
        message=message,
        trials=TrialCounts(**plan.counts) if plan is not None else TrialCounts(),
        best=best,
        best_value=best.value if best is not None else None,
        progress="{}/{}".format(*progress_of(spec, plan.counts if plan is not None else {})),
        pareto_front=[best_trial(b) for b in shown] if shown else None,
        pareto_front_size=len(front) if front else None,
        conditions=experiment_conditions(
            conditions, phase, finished, spec.suspend, generation, now
        ),
        observed_generation=generation,
        start_time=rfc3339(started_at),
        completion_time=rfc3339(completed_at or now) if finished is not None else None,
        gpu_seconds=round(gpu_seconds, 3) if gpu_seconds else None,
        comparison=plan.comparison if plan is not None else None,
    )


def experiment_conditions(
    old: Sequence[Mapping[str, Any]],
    phase: str,
    finished: FinishExperiment | None,
    suspended: bool,
    generation: int | None,
    now: float,
) -> list[Condition]:
    """The experiment's conditions: SpecValid, Running, Suspended and, once it finished,
    its phase, GoalReached and BudgetExhausted."""
    previous = {c.get("type"): c for c in old}
    running = phase == "Running"
    wanted = [
        ("SpecValid", "True", "Valid", "the spec is valid"),
        (
            "Running",
            "True" if running else "False",
            "TrialsRunning" if running else phase,
            "trials are running" if running else (finished.message if finished else ""),
        ),
        ("Suspended", *(("True", "Suspended") if suspended else ("False", "NotSuspended")), ""),
    ]
    if finished is not None:
        wanted.append((finished.phase, "True", finished.reason, finished.message))
        for kind in ("GoalReached", "BudgetExhausted"):
            hit = finished.reason == kind or (
                kind == "BudgetExhausted" and finished.reason == "SearchSpaceExhausted"
            )
            wanted.append(
                (kind, "True" if hit else "False", finished.reason, finished.message if hit else "")
            )
    return [
        condition(k, s, r, m, previous.get(k), generation, now)  # type: ignore[arg-type]
        for k, s, r, m in wanted
    ]


def condition(
    kind: str,
    status: str,
    reason: str,
    message: str,
    previous: Mapping[str, Any] | None,
    generation: int | None,
    now: float,
) -> Condition:
    """A condition; it keeps its last transition time while its status stays the same."""
    same = previous is not None and previous.get("status") == status
    return Condition(
        type=kind,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        message=message,
        last_transition_time=(previous or {}).get("lastTransitionTime") if same else rfc3339(now),
        observed_generation=generation,
    )
