"""Warm starts: an earlier experiment's finished trials, as the sampler is told them.

``spec.warmStart`` names an earlier experiment (a cluster Experiment in the same
namespace, or a local run directory); each runtime reads that experiment's spec
and trial records, and :func:`warm_trials` decides which of them the sampler is
told before its first suggestion, and how.  Every run that succeeded counts:
search trials, the baseline's runs, arms and confirmations alike.

The compatible subset: a parameter of the earlier space that this space lacks,
or holds with another range or type, is dropped from every told trial (the
warning names it); a parameter this space adds is left to the sampler.  A
trial whose values fall outside this space, or that lacks a metric this spec
needs (an objective, a constrained metric), is left out and counted.

Deterministic across restarts: only trials that completed before this
experiment started are told (``before``, its start in whole seconds, as both
runtimes record it), so a process that restarts later tells the same ones even
if the earlier experiment has run on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from trialforge.api.experiment import ExperimentSpec
from trialforge.api.validation import value_error
from trialforge.engine import space
from trialforge.engine.objective import violations_of
from trialforge.engine.record import TrialRecord, latest_attempts
from trialforge.engine.search import WarmTrial


@dataclass(frozen=True)
class WarmStart:
    """What a warm start tells the sampler, and what it left out."""

    source: str  # e.g. "experiment digits-a", "runDir runs/digits-a"
    trials: list[WarmTrial] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # parameters of the source left out
    skipped: int = 0  # finished trials left out (outside the space, metrics missing)
    warnings: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One line for a Trial's spec and an Event: the source and what it gave."""
        text = f"{self.source}: {len(self.trials)} trials"
        if self.dropped:
            text += f", dropped parameters {', '.join(self.dropped)}"
        return text if len(text) <= 1000 else text[:997] + "..."


def warm_trials(
    spec: ExperimentSpec,
    source_spec: ExperimentSpec,
    records: Iterable[TrialRecord],
    *,
    source: str,
    before: float | None,
    last_values: Mapping[str, Mapping[str, float]] | None = None,
) -> WarmStart:
    """The trials of an earlier experiment (``source_spec``, ``records``) to tell the
    sampler of ``spec``: those that succeeded and completed before ``before``.

    ``last_values`` (trial name -> metric -> its last reported value) gives the
    constrained metrics of trials whose experiment did not constrain them."""
    warnings: list[str] = []
    columns: list[int] = []
    theirs = source_spec.all_objectives
    for objective in spec.all_objectives:
        match = next((i for i, o in enumerate(theirs) if o.metric == objective.metric), None)
        if match is None or theirs[match].direction != objective.direction:
            warnings.append(
                f"warm start from {source}: it does not {objective.direction} "
                f"{objective.metric!r}, so none of its trials can be told"
            )
            return WarmStart(source, warnings=warnings)
        columns.append(match)
    kept: list[str] = []
    dropped: list[str] = []
    for q in source_spec.parameters:
        p = spec.parameter(q.name)
        if p is None:
            dropped.append(f"{q.name} (not in this space)")
        elif space.distribution(p) != space.distribution(q) or p.when != q.when:
            dropped.append(f"{q.name} (another space)")
        else:
            kept.append(q.name)
    added = [p.name for p in spec.parameters if source_spec.parameter(p.name) is None]
    if dropped:
        warnings.append(
            f"warm start from {source}: dropped parameters {', '.join(dropped)}; the rest are told"
        )
    if added:
        warnings.append(
            f"warm start from {source}: it has no {', '.join(added)}; the sampler chooses "
            "them freely"
        )
    told: list[WarmTrial] = []
    skipped = 0
    cutoff = None if before is None else math.floor(before) + 1
    for index in sorted(latest := latest_attempts(list(records))):
        record = latest[index]
        if record.phase != "Succeeded" or not record.values:
            continue
        if cutoff is not None and (
            record.completion_time is None or math.floor(record.completion_time) >= cutoff
        ):
            continue
        parameters = {k: record.parameters[k] for k in kept if k in record.parameters}
        constraints = record.constraints
        if spec.constraints and constraints is None and last_values is not None:
            constraints = last_values.get(record.name)
        violations = violations_of(spec, constraints) if spec.constraints else None
        if (
            len(record.values) != len(theirs)
            or any(value_error(spec.parameter(k), v) for k, v in parameters.items())
            or (spec.constraints and violations is None)
        ):
            skipped += 1
            continue
        values = tuple(float(record.values[i]) for i in columns)
        told.append(WarmTrial(parameters, values, violations))
    if skipped:
        what = "or lack a constrained metric " if spec.constraints else ""
        warnings.append(
            f"warm start from {source}: {skipped} finished trials fall outside this space "
            f"{what}and are not told"
        )
    return WarmStart(source, told, [d.split(" ")[0] for d in dropped], skipped, warnings)
