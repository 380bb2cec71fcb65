"""The planner: given the experiment and its trials as they are now, what happens next.

Level-based, like a controller-runtime reconcile: :meth:`Planner.plan` looks at
the whole world each time and returns the actions that move it toward the spec.
Calling it again with the same world returns the same actions, so an adapter
that crashed half way through carrying them out simply calls it again.  Trials
that ended for good are summed up once (a ledger, checked against the world at
every plan), so a plan's cost follows the trials still in play, not all of them.

The parts: the design (engine.design: which runs, in what order, with what
parameters and seeds), the ledger (engine.ledger), the outcomes (engine.outcome:
best, Pareto front, the search's end, the finish), the comparison
(engine.comparison) and the actions (engine.actions).  The names other code
imports from here are re-exported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trialforge.api.experiment import ExperimentSpec
from trialforge.api.status import ACTIVE_PHASES, TERMINAL_PHASES, TrialPhase
from trialforge.api.trial import TrialRole
from trialforge.engine import design, outcome
from trialforge.engine.actions import Action, FinishExperiment, StartTrial, StopTrial
from trialforge.engine.comparison import Comparer
from trialforge.engine.design import (
    BASELINE,
    ROLE_ARM,
    ROLE_BASELINE,
    ROLE_CONFIRM,
    ROLE_SEARCH,
    Slot,
    design_summary,
    planned_trials,
    search_config,
    search_index_of,
    slot_of,
)
from trialforge.engine.ledger import Ledger, Merged
from trialforge.engine.objective import violations_of
from trialforge.engine.outcome import Best, Config
from trialforge.engine.record import TrialRecord, latest_attempts
from trialforge.engine.search import Search
from trialforge.engine.warm import WarmStart

__all__ = [
    "BASELINE",
    "ROLE_ARM",
    "ROLE_BASELINE",
    "ROLE_CONFIRM",
    "ROLE_SEARCH",
    "Action",
    "Best",
    "FinishExperiment",
    "Plan",
    "Planner",
    "Slot",
    "StartTrial",
    "StopTrial",
    "design_summary",
    "planned_trials",
    "search_config",
    "search_index_of",
    "slot_of",
]


@dataclass(frozen=True)
class Plan:
    actions: list[Action]
    counts: dict[str, int]
    best: Best | None
    pareto_front: list[Best]
    finished: FinishExperiment | None
    # Candidates against the baseline (engine.comparison rows); None when the
    # experiment compares nothing (no baseline, arms or confirm).
    comparison: list[dict[str, Any]] | None = None

    def of(self, kind: type) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]


@dataclass
class _World:
    """What one plan looks at: the trials still in play (not in the ledger), by slot."""

    live: list[TrialRecord]
    latest: dict[int, TrialRecord]  # index -> latest attempt
    slots: dict[int, Slot]  # index -> its slot
    by_slot: dict[Slot, TrialRecord]  # every run but the search's
    search_runs: dict[int, dict[int, TrialRecord]]  # configuration -> repeat -> latest attempt
    # Trials stopped this round no longer hold a slot, but they are not
    # terminal in the world yet; this plan counts them as such in what it decides.
    stopping: dict[str, StopTrial] = field(default_factory=dict)


@dataclass(frozen=True)
class _Decided:
    """What a plan decided about its world before it starts anything."""

    live_phases: Mapping[int, TrialPhase | None]  # index -> final phase, None while it may change
    configs: Merged  # the search's configurations, settled and live
    end: tuple[str, str] | None  # (reason, message) once the search is over
    top: list[str]  # the confirmation's configurations, once the search is over


class Planner:
    """Decides for one experiment; holds its :class:`Search` between calls.

    The design it carries out is engine.design's.  Between calls it keeps the
    search, the ledger of settled trials, the configurations the search was
    told the end of (and the best of them), and the comparison's last rows.
    """

    def __init__(self, spec: ExperimentSpec, name: str, warm: WarmStart | None = None) -> None:
        self.spec = spec
        self.name = name
        self.warm = warm
        self.search = Search(spec, name, warm.trials if warm is not None else ())
        self._comparer = Comparer()
        self._final_configs: dict[int, Config] = {}
        self._best_final: Config | None = None
        self._slots: dict[tuple[str, int], Slot] = {}
        self._ledger = Ledger(spec)

    def reacts_to(self, intermediate: Iterable[float]) -> bool:
        """Whether new intermediate values of a running trial's objective can change the plan.

        They can when a pruner judges them, or when one is not finite (the
        planner fails a diverged trial).  Otherwise they matter only once the
        trial ends, and an adapter need not plan again for them at once.
        """
        return self.search.prunes or any(not math.isfinite(v) for v in intermediate)

    def plan(
        self,
        trials: Sequence[TrialRecord],
        *,
        now: float,
        started_at: float | None = None,
        suspended: bool = False,
        settled_omitted: bool = False,
    ) -> Plan:
        """The actions that move ``trials`` toward the spec, with the counts and outcomes.

        ``now`` and ``started_at`` (seconds since the epoch) judge the
        deadline; a ``suspended`` experiment stops what must stop and starts
        nothing.  ``settled_omitted``: ``trials`` leaves out every trial
        :meth:`settled` said yes to, each unchanged since (an adapter that
        alone changes its trials, as the local runtime does, can promise it):
        the plan then costs what is in play, not every trial ever run.
        """
        spec = self.spec
        world = self._observe(trials, settled_omitted)
        ledger = self._ledger
        self._stop_diverged_or_pruned(world)
        retries = spec.trial.retries
        # Each trial index's final phase, None while it may still change.
        live_phases = {
            i: outcome.final_phase(v, retries, world.stopping) for i, v in world.latest.items()
        }
        phases = Merged(ledger.outcome, live_phases)
        counts = _counts(world, ledger)
        # A configuration the search was told the end of cannot change any more.
        final = self._final_configs
        configs = Merged(
            ledger.configs,
            {
                k: final.get(k) or outcome.config_outcome(spec, self.search, k, runs, phases)
                for k, runs in world.search_runs.items()
            },
        )
        best, front = outcome.best_and_front(spec, configs, world.by_slot, phases, self._best_final)
        end = None if spec.arms else outcome.search_end(spec, self.search, ledger, configs, best)
        top = outcome.top_configs(spec, configs) if end is not None and spec.confirm else []
        decided = _Decided(live_phases, configs, end, top)
        failed, succeeded = outcome.ended_counts(ledger, live_phases)
        finished = outcome.finished(
            spec, total=counts["total"], failed=failed, succeeded=succeeded, outcome=phases,
            wanted=self._wanted(decided), by_slot=world.by_slot, search_end=end,
            now=now, started_at=started_at,
        )  # fmt: skip
        comparison = self._comparer.rows(
            spec, self.search.seed, world.by_slot, phases, configs, end, top
        )
        self._settle(world)
        if finished is not None:
            self._cancel_active(world, finished.reason, f"experiment finished: {finished.message}")
            actions: list[Action] = [*world.stopping.values(), finished]
            return Plan(actions, counts, best, front, finished, comparison)
        if end is not None:
            # The search is over (a goal reached) while the baseline or the
            # confirmation still runs: its own trials still running stop.
            self._cancel_active(world, end[0], f"search ended: {end[1]}", ROLE_SEARCH)
        actions = list(world.stopping.values())
        if not suspended:
            actions += self._starts(world, decided)
        return Plan(actions, counts, best, front, None, comparison)

    # -- observing -------------------------------------------------------------------

    def settled(self, name: str) -> bool:
        """Whether the trial ``name`` is settled: a plan no longer needs to see it
        (see ``settled_omitted``) while it does not change."""
        return name in self._ledger.views

    def _observe(self, trials: Sequence[TrialRecord], omitted: bool = False) -> _World:
        """The trials still in play, by slot; the search told what became of them."""
        spec = self.spec
        ledger = self._ledger
        if ledger.spec is not spec:
            # The kube adapter hands the spec over anew each time: only a change counts.
            if ledger.spec != spec:
                if omitted and ledger.views:
                    raise ValueError("the spec changed: plan() needs every trial")
                ledger = self._ledger = Ledger(spec)
            ledger.spec = spec
        live = ledger.live(trials, omitted)
        if live is None and omitted:
            raise ValueError(
                "a settled trial was handed to plan() again with settled_omitted: "
                "plan() needs every trial"
            )
        if live is None:
            ledger = self._ledger = Ledger(spec)
            live = list(trials)
        latest = latest_attempts(live)
        slots = {i: self._slot(v) for i, v in latest.items()}
        # The search's runs by configuration and repeat; every other run by its slot.
        by_slot: dict[Slot, TrialRecord] = {}
        search_runs: dict[int, dict[int, TrialRecord]] = {}
        for i in sorted(latest):
            slot = slots[i]
            if slot.role == ROLE_SEARCH and slot.search_index is not None:
                search_runs.setdefault(slot.search_index, {}).setdefault(slot.repeat, latest[i])
            else:
                by_slot.setdefault(slot, latest[i])
        self._sync(search_runs)
        return _World(live, latest, slots, by_slot, search_runs)

    def _slot(self, view: TrialRecord) -> Slot:
        key = (view.name, view.index)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = slot_of(view)
        return slot

    def _sync(self, search_runs: Mapping[int, Mapping[int, TrialRecord]]) -> None:
        # Configurations the study already knows the end of cannot change it any
        # more: skipping them keeps a plan's sync to those still in play rather
        # than every configuration so far.
        pending = [k for k in sorted(search_runs) if not self.search.is_finished(k)]
        for k in pending:
            runs = search_runs[k]
            first = runs[min(runs)]
            self.search.restore(k, first.parameters, first.search_state)
        retries = self.spec.trial.retries
        ended = {
            k: {v.index: outcome.final_phase(v, retries, {}) for v in search_runs[k].values()}
            for k in pending
        }
        # The configurations whose runs all ended are told first, then those still
        # running are heard: a pruner that judges against the completed trials
        # then judges a running one against the same trials whether this planner
        # saw them end one by one or was built afresh (level-based).
        done = [k for k in pending if None not in ended[k].values()]
        for k in [*done, *(k for k in pending if None in ended[k].values())]:
            runs = search_runs[k]
            first = runs.get(0)
            if first is not None and first.intermediate:
                # A first run that has ended is judged by how it ended, not again.
                done_first = first.phase in TERMINAL_PHASES
                self.search.report(k, first.intermediate, ended=done_first)
            cfg = outcome.config_outcome(self.spec, self.search, k, runs, ended[k])
            if cfg.phase is not None:
                violations = violations_of(self.spec, cfg.constraints)
                self.search.finish(k, cfg.phase, cfg.values, violations)
                self._final_configs[k] = cfg
                self._best_final = outcome.keep_best(self.spec, self._best_final, cfg)

    def _settle(self, world: _World) -> None:
        """Move the indices this plan found settled into the ledger (see :class:`Ledger`)."""
        retries = self.spec.trial.retries
        settled: dict[int, tuple[Config, TrialPhase]] = {}
        for index, view in world.latest.items():
            slot = world.slots[index]
            cfg = self._final_configs.get(slot.search_index)  # type: ignore[arg-type]
            if slot.role != ROLE_SEARCH or cfg is None:
                continue
            phase = outcome.final_phase(view, retries, {})
            if phase is not None:
                settled[index] = (cfg, phase)
        if not settled:
            return
        attempts: dict[int, list[TrialRecord]] = {}
        for view in world.live:
            if view.index in settled:
                attempts.setdefault(view.index, []).append(view)
        for index, (cfg, phase) in settled.items():
            self._ledger.settle(
                attempts[index], world.latest[index], world.slots[index], cfg, phase
            )

    # -- stopping --------------------------------------------------------------------

    def _stop_diverged_or_pruned(self, world: _World) -> None:
        """Stop the running trials whose objective diverged or whose pruner said stop."""
        spec = self.spec
        metric = spec.all_objectives[0].metric
        for view in world.latest.values():
            if view.phase != TrialPhase.RUNNING:
                continue
            slot = world.slots[view.index]
            diverged = _non_finite(view.intermediate)
            if diverged is not None:
                # The search stops a non-finite series too, but this is a failure
                # of the training, not the pruner's judgement: fail it, for good.
                step, value = diverged
                world.stopping[view.name] = StopTrial(
                    view.name,
                    TrialPhase.FAILED,
                    "ObjectiveNotFinite",
                    f"objective {metric!r} is {value} at step {step} — the training diverged",
                    retryable=False,
                )
            elif (
                slot.role == ROLE_SEARCH
                and slot.search_index is not None
                and self.search.should_prune(slot.search_index)
            ):
                world.stopping[view.name] = StopTrial(
                    view.name,
                    TrialPhase.PRUNED,
                    "EarlyStopped",
                    f"{spec.early_stopping.algorithm} stopped it: its "
                    f"{spec.all_objectives[0].metric} trails the other trials",
                )

    def _cancel_active(
        self, world: _World, reason: str, message: str, role: TrialRole | None = None
    ) -> None:
        """Cancel every trial still active (of ``role``, if given) that is not stopping yet."""
        for view in world.latest.values():
            if (
                view.phase in ACTIVE_PHASES
                and view.name not in world.stopping
                and (role is None or world.slots[view.index].role == role)
            ):
                world.stopping[view.name] = StopTrial(
                    view.name, TrialPhase.CANCELLED, reason, message
                )

    # -- starting --------------------------------------------------------------------

    def _starts(self, world: _World, decided: _Decided) -> list[StartTrial]:
        """Retries first, they finish configurations already paid for; then new runs."""
        active = sum(
            1
            for v in world.latest.values()
            if v.phase in ACTIVE_PHASES and v.name not in world.stopping
        )
        free = self.spec.budget.parallelism - active
        starts = self._retries(world, decided, free)
        free -= len(starts)
        if free > 0:
            starts += self._new_runs(world, decided, free)
        return starts

    def _retries(self, world: _World, decided: _Decided, free: int) -> list[StartTrial]:
        """Up to ``free`` new attempts of trials that failed and may run again."""
        starts: list[StartTrial] = []
        for index in sorted(world.latest):
            view = world.latest[index]
            if len(starts) >= free:
                break
            slot = world.slots[index]
            if slot.role == ROLE_SEARCH and slot.search_index is not None:
                cfg = decided.configs.get(slot.search_index)
                if decided.end is not None or (cfg is not None and cfg.phase is not None):
                    continue  # its configuration is decided (pruned, or the search ended)
            if decided.live_phases[index] is None and view.phase == TrialPhase.FAILED:
                starts.append(
                    StartTrial(
                        index,
                        view.attempt + 1,
                        dict(view.parameters),
                        view.seed,
                        dict(view.search_state or {}),
                        "retry",
                        slot.role,
                        slot.config,
                        slot.repeat,
                        slot.search_index,
                        self._warm_label,
                    )
                )
        return starts

    def _new_runs(self, world: _World, decided: _Decided, free: int) -> list[StartTrial]:
        """Up to ``free`` runs the design calls for that no trial fills, each at the
        smallest index no trial has."""
        ledger = self._ledger
        latest, search_runs = world.latest, world.search_runs
        starts: list[StartTrial] = []
        next_index = ledger.first_free
        for slot in self._wanted(decided):
            if len(starts) >= free:
                break
            if slot.role == ROLE_SEARCH:
                if slot.repeat in search_runs.get(slot.search_index, {}):  # type: ignore[arg-type]
                    continue
            elif slot in world.by_slot:
                continue
            while next_index in latest or next_index in ledger.indices:
                next_index += 1
            k = slot.search_index
            runs = search_runs.get(k) or ledger.runs.get(k)  # type: ignore[arg-type]
            parameters, state = design.parameters(self.spec, self.search, slot, runs)
            starts.append(
                StartTrial(
                    next_index,
                    0,
                    parameters,
                    design.seed_of(self.search.seed, slot),
                    state,
                    "new",
                    slot.role,
                    slot.config,
                    slot.repeat,
                    slot.search_index,
                    self._warm_label,
                )
            )
            next_index += 1
        return starts

    @property
    def _warm_label(self) -> str | None:
        return self.warm.summary if self.warm is not None else None

    def _wanted(self, decided: _Decided) -> Iterator[Slot]:
        return design.wanted(
            self.spec, self.search, decided.configs, self._ledger.highest, decided.end, decided.top
        )


def _non_finite(intermediate: Mapping[int, float]) -> tuple[int, float] | None:
    for step in sorted(intermediate):
        if not math.isfinite(intermediate[step]):
            return step, intermediate[step]
    return None


def _counts(world: _World, ledger: Ledger) -> dict[str, int]:
    """Trials by phase (those stopping this round in the phase they stop in), retries, total."""
    counts = dict.fromkeys(("pending", "running", "succeeded", "failed", "pruned", "cancelled"), 0)
    for phase, n in ledger.phases.items():
        counts[phase] += n
    stopping = world.stopping
    for view in world.latest.values():
        phase = stopping[view.name].phase if view.name in stopping else view.phase
        counts[phase.lower()] += 1
    counts["retried"] = ledger.retried + sum(1 for v in world.live if v.attempt > 0)
    counts["infeasible"] = ledger.infeasible + sum(
        1 for v in world.latest.values() if v.feasible is False
    )
    counts["disruptions"] = ledger.disruptions + sum(v.disruptions for v in world.live)
    counts["total"] = len(ledger.indices) + len(world.latest)
    return counts
