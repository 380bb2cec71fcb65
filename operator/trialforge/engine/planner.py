"""The planner: given the experiment and its trials as they are now, what happens next.

Level-based, like a controller-runtime reconcile: :meth:`Planner.plan` looks at
the whole world each time and returns the actions that move it toward the spec.
Calling it again with the same world returns the same actions, so an adapter
that crashed half way through carrying them out simply calls it again.  Trials
that ended for good are summed up once (a ledger, checked against the world at
every plan), so a plan's cost follows the trials still in play, not all of them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trialforge.api.experiment import ExperimentSpec
from trialforge.api.status import ACTIVE_PHASES, TERMINAL_PHASES
from trialforge.engine.objective import better, dominates, meets_goal
from trialforge.engine.record import TrialRecord, latest_attempts
from trialforge.engine.search import Search, derive_seed

ROLE_SEARCH = "search"
ROLE_BASELINE = "baseline"
ROLE_ARM = "arm"
ROLE_CONFIRM = "confirm"
BASELINE = "baseline"  # the baseline configuration's name in comparisons


def search_config(k: int) -> str:
    """The name of the search's configuration ``k`` (its Optuna trial number)."""
    return f"c{k}"


@dataclass(frozen=True)
class Slot:
    """One run the experiment's design calls for: which configuration, which repeat.

    ``role`` is ``search`` (configuration ``search_index`` of the search),
    ``baseline`` (spec.baseline), ``arm`` (an arm of spec.arms) or ``confirm``
    (a fresh run of a top configuration or of the baseline after the search).
    """

    role: str
    config: str
    repeat: int = 0
    search_index: int | None = None


@dataclass(frozen=True)
class StartTrial:
    index: int
    attempt: int
    parameters: dict[str, Any]
    seed: int
    search_state: dict[str, Any]
    why: str  # "new" | "retry"
    role: str = ROLE_SEARCH
    config: str | None = None
    repeat: int = 0
    search_index: int | None = None


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
    """The best configuration: with repeats, ``values`` are means over its runs
    that succeeded and ``name`` is the first of those runs."""

    name: str
    index: int
    parameters: Mapping[str, Any]
    values: tuple[float, ...]
    config: str | None = None
    runs: int = 1
    artifact_uri: str | None = None


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
class _Config:
    """A search configuration's runs and, once known, its outcome."""

    k: int
    runs: dict[int, TrialRecord]  # repeat -> latest attempt
    phase: str | None = None  # final phase, None while it may still change
    values: tuple[float, ...] | None = None  # means over the runs that succeeded
    succeeded: list[TrialRecord] = field(default_factory=list)


class _Ledger:
    """The settled trials of one spec, summed up once so that a plan need not look at them.

    A trial index is settled once its latest attempt ended for good (no retry
    follows) and the search was told its configuration's outcome (the
    configuration is in ``Planner._final_configs``): beyond these sums, nothing
    a plan decides depends on it any more, so a plan looks at the other trials
    only.  A cache, never the truth: every plan checks that each settled
    trial is still in the world, unchanged (the same object or an equal one),
    with no newer attempt; when one is not, or the spec changed, the ledger is
    cleared and that plan looks at every trial again.  (A world names each
    trial once, as both adapters' do.)
    """

    def __init__(self, spec: ExperimentSpec | None = None) -> None:
        self.spec = spec
        self.views: dict[str, TrialRecord] = {}  # every attempt of a settled index
        self.indices: set[int] = set()
        self.outcome: dict[int, str] = {}  # settled index -> final phase
        self.configs: dict[int, _Config] = {}  # the settled trials' configurations
        self.runs: dict[int, dict[int, TrialRecord]] = {}  # k -> repeat -> latest attempt
        self.phases: dict[str, int] = {}  # lower-case phase -> latest attempts
        self.retried = 0  # attempts > 0
        self.failed = 0  # outcomes
        self.succeeded = 0
        self.configs_succeeded = 0
        self.highest = -1  # the highest configuration number
        self.first_free = 0  # every index below it is settled
        self._done: tuple[int, int] = (-1, 0)  # (limit, configurations below it)

    def live(self, trials: Sequence[TrialRecord]) -> list[TrialRecord] | None:
        """The trials that are not settled; None if the world no longer matches the ledger."""
        views = self.views
        if not views:
            return list(trials)
        live = []
        hits = 0
        for view in trials:
            known = views.get(view.name)
            if known is not None and (known is view or known == view):
                hits += 1
            else:
                live.append(view)
        if hits != len(views):
            return None
        indices = self.indices
        if any(view.index in indices for view in live):
            return None
        return live

    def settle(
        self,
        views: Sequence[TrialRecord],
        latest: TrialRecord,
        slot: Slot,
        cfg: _Config,
        outcome: str,
    ) -> None:
        """Add an index: its attempts, the latest one, its slot and configuration, its outcome."""
        for view in views:
            self.views[view.name] = view
            self.retried += view.attempt > 0
        index = latest.index
        self.indices.add(index)
        self.outcome[index] = outcome
        phase = latest.phase.lower()
        self.phases[phase] = self.phases.get(phase, 0) + 1
        self.failed += outcome == "Failed"
        self.succeeded += outcome == "Succeeded"
        k = cfg.k
        runs = self.runs.setdefault(k, {})
        if slot.repeat not in runs or runs[slot.repeat].index > index:
            runs[slot.repeat] = latest
        if k not in self.configs:
            self.configs[k] = cfg
            self.configs_succeeded += cfg.phase == "Succeeded"
            self.highest = max(self.highest, k)
            limit, done = self._done
            if k < limit:
                self._done = (limit, done + 1)
        while self.first_free in self.indices:
            self.first_free += 1

    def done_below(self, limit: int) -> int:
        """How many settled configurations are numbered below ``limit`` (all have ended)."""
        if self._done[0] != limit:
            self._done = (limit, sum(1 for k in self.configs if k < limit))
        return self._done[1]


class _Merged(Mapping[int, Any]):
    """Two dicts read as one: the ledger's (settled) and this plan's (live), live first."""

    def __init__(self, settled: Mapping[int, Any], live: Mapping[int, Any]) -> None:
        self.settled = settled
        self.live = live

    def __getitem__(self, key: int) -> Any:
        if key in self.live:
            return self.live[key]
        return self.settled[key]

    def __contains__(self, key: object) -> bool:
        return key in self.live or key in self.settled

    def __iter__(self) -> Iterator[int]:
        live = self.live
        yield from (k for k in self.settled if k not in live)
        yield from live

    def __len__(self) -> int:
        settled = self.settled
        return len(settled) + sum(1 for k in self.live if k not in settled)


def slot_of(view: TrialRecord) -> Slot:
    role = view.role or ROLE_SEARCH
    if role == ROLE_SEARCH:
        k = view.search_index if view.search_index is not None else view.index
        return Slot(ROLE_SEARCH, search_config(k), view.repeat, k)
    return Slot(role, view.config or "", view.repeat, view.search_index)


class Planner:
    """Decides for one experiment; holds its :class:`Search` between calls.

    The experiment's design, in the order trials start:

    * ``arms`` (a comparison experiment): for each repeat, the baseline (when
      set) and every arm; nothing else.
    * otherwise the baseline's ``repeats`` runs first, then the search:
      configuration k (Optuna trial k) runs ``repeats`` times, each with its
      own seed; the search hears the mean of the runs that succeeded, and its
      pruner watches the first run (pruning it stops the configuration).
      ``budget.maxTrials`` counts configurations, so a search makes up to
      maxTrials x repeats trials.  When it ends (budget, space, or goal),
      ``confirm`` runs the best ``top`` configurations and the baseline
      ``confirm.repeats`` times each with fresh seeds.

    Trial indices are handed out in that order, each new trial taking the
    smallest index no trial has; every Trial records its role, configuration,
    repeat and (for the search) its configuration number, so the design is read
    back from the trials, not from index arithmetic.
    """

    def __init__(self, spec: ExperimentSpec, name: str) -> None:
        self.spec = spec
        self.name = name
        self.search = Search(spec, name)
        self._comparison_key: Any = None
        self._comparison: list[dict[str, Any]] | None = None
        self._final_configs: dict[int, _Config] = {}
        self._best_final: _Config | None = None
        self._slots: dict[tuple[str, int], Slot] = {}
        self._ledger = _Ledger(spec)

    def reacts_to(self, intermediate: Iterable[float]) -> bool:
        """Whether new intermediate values of a running trial's objective can change the plan.

        They can when a pruner judges them, or when one is not finite (the
        planner fails a diverged trial).  Otherwise they matter only once the
        trial ends, and an adapter need not plan again for them at once.
        """
        return self.search.prunes or any(not math.isfinite(v) for v in intermediate)

    def _keep_best(self, cfg: _Config) -> None:
        if cfg.phase != "Succeeded" or cfg.values is None or self.spec.multi_objective:
            return
        top = self._best_final
        direction = self.spec.all_objectives[0].direction
        if (
            top is None
            or better(cfg.values[0], top.values[0], direction)  # type: ignore[index]
            or (cfg.values[0] == top.values[0] and cfg.k < top.k)  # type: ignore[index]
        ):
            self._best_final = cfg

    def _slot(self, view: TrialRecord) -> Slot:
        key = (view.name, view.index)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = slot_of(view)
        return slot

    def plan(
        self,
        trials: Sequence[TrialRecord],
        *,
        now: float,
        started_at: float | None = None,
        suspended: bool = False,
    ) -> Plan:
        spec = self.spec
        budget = spec.budget
        ledger = self._ledger
        if ledger.spec is not spec:
            # The kube adapter hands the spec over anew each time: only a change counts.
            if ledger.spec != spec:
                ledger = self._ledger = _Ledger(spec)
            ledger.spec = spec
        live = ledger.live(trials)
        if live is None:
            ledger = self._ledger = _Ledger(spec)
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

        actions: list[Action] = []
        # Trials stopped this round no longer hold a slot, but they are not
        # terminal in the world yet; count them as such for the decisions below.
        stopping: dict[str, StopTrial] = {}
        metric = spec.all_objectives[0].metric
        for view in latest.values():
            if view.phase != "Running":
                continue
            slot = slots[view.index]
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
            elif (
                slot.role == ROLE_SEARCH
                and slot.search_index is not None
                and self.search.should_prune(slot.search_index)
            ):
                stopping[view.name] = StopTrial(
                    view.name,
                    "Pruned",
                    "EarlyStopped",
                    f"{spec.early_stopping.algorithm} stopped it: its "
                    f"{spec.all_objectives[0].metric} trails the other trials",
                )

        live_outcome = {i: self._final_phase(v, stopping) for i, v in latest.items()}
        outcome = _Merged(ledger.outcome, live_outcome)
        counts = _counts(live, latest, stopping, ledger)
        # A configuration the search was told the end of cannot change any more.
        final = self._final_configs
        configs = _Merged(
            ledger.configs,
            {k: final.get(k) or self._config(k, runs, outcome) for k, runs in search_runs.items()},
        )
        best, front = self._best(configs, by_slot, outcome)
        search_end = None if spec.arms else self._search_end(configs, best)
        top = self._top(configs) if search_end is not None and spec.confirm else []
        failed = ledger.failed + sum(1 for o in live_outcome.values() if o == "Failed")
        succeeded = ledger.succeeded + sum(1 for o in live_outcome.values() if o == "Succeeded")
        finished = self._finished(
            counts["total"], failed, succeeded, outcome, self._wanted(configs, search_end, top),
            by_slot, search_end, now, started_at,
        )  # fmt: skip
        comparison = self._compare(by_slot, outcome, configs, search_end, top)
        self._settle(live, latest, slots)
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
            return Plan(actions, counts, best, front, finished, comparison)
        if search_end is not None:
            # The search is over (a goal reached) while the baseline or the
            # confirmation still runs: its own trials still running stop.
            for view in latest.values():
                if (
                    view.phase in ACTIVE_PHASES
                    and view.name not in stopping
                    and slots[view.index].role == ROLE_SEARCH
                ):
                    stopping[view.name] = StopTrial(
                        view.name, "Cancelled", search_end[0], f"search ended: {search_end[1]}"
                    )
        actions.extend(stopping.values())
        if suspended:
            return Plan(actions, counts, best, front, None, comparison)

        active = sum(
            1 for v in latest.values() if v.phase in ACTIVE_PHASES and v.name not in stopping
        )
        free = budget.parallelism - active
        # Retries first: they finish configurations already paid for.
        for index in sorted(latest):
            view = latest[index]
            if free <= 0:
                break
            slot = slots[index]
            if slot.role == ROLE_SEARCH and slot.search_index is not None:
                cfg = configs.get(slot.search_index)
                if search_end is not None or (cfg is not None and cfg.phase is not None):
                    continue  # its configuration is decided (pruned, or the search ended)
            if outcome[index] is None and view.phase == "Failed":
                actions.append(
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
                    )
                )
                free -= 1
        next_index = ledger.first_free
        for slot in self._wanted(configs, search_end, top):
            if free <= 0:
                break
            if slot.role == ROLE_SEARCH:
                if slot.repeat in search_runs.get(slot.search_index, {}):  # type: ignore[arg-type]
                    continue
            elif slot in by_slot:
                continue
            while next_index in latest or next_index in ledger.indices:
                next_index += 1
            parameters, state = self._parameters(slot, search_runs)
            actions.append(
                StartTrial(
                    next_index,
                    0,
                    parameters,
                    self._seed(slot),
                    state,
                    "new",
                    slot.role,
                    slot.config,
                    slot.repeat,
                    slot.search_index,
                )
            )
            next_index += 1
            free -= 1
        return Plan(actions, counts, best, front, None, comparison)

    # -- the design ------------------------------------------------------------------

    def _limit(self) -> int:
        capacity = self.search.capacity()
        limit = self.spec.budget.max_trials or 0
        return min(limit, capacity) if capacity is not None else limit

    def _wanted(
        self, configs: _Merged, search_end: tuple[str, str] | None, top: list[str]
    ) -> Iterator[Slot]:
        """Every run the design calls for now, in the order they should start."""
        spec = self.spec
        repeats = spec.repeats
        baseline = [BASELINE] if spec.baseline is not None else []
        if spec.arms:
            names = baseline + [a.name for a in spec.arms]
            for r in range(repeats):
                for name in names:
                    role = ROLE_BASELINE if name == BASELINE and baseline else ROLE_ARM
                    yield Slot(role, name, r)
            return
        for r in range(repeats if baseline else 0):
            yield Slot(ROLE_BASELINE, BASELINE, r)
        if search_end is None:
            limit = self._limit()
            # Configurations started but short of runs, gaps (a crash between
            # deciding and creating), then new ones: without scanning them all.
            highest = max(self._ledger.highest, max(configs.live, default=-1))
            open_ks = {
                k
                for k, cfg in configs.live.items()  # a settled configuration has ended
                if k < limit
                and cfg.phase is None
                and len(cfg.runs) < repeats
                and not self.search.should_prune(k)
            }
            if len(configs) < highest + 1:
                open_ks.update(k for k in range(min(highest + 1, limit)) if k not in configs)
            for k in itertools.chain(sorted(open_ks), range(highest + 1, limit)):
                for r in range(repeats):
                    yield Slot(ROLE_SEARCH, search_config(k), r, k)
        elif spec.confirm is not None and top:
            for r in range(spec.confirm.repeats):
                for name in baseline + top:
                    k = None if name == BASELINE else int(name[1:])
                    yield Slot(ROLE_CONFIRM, name, r, k)

    def _parameters(
        self, slot: Slot, search_runs: Mapping[int, Mapping[int, TrialRecord]]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        spec = self.spec
        if slot.config == BASELINE and slot.role in (ROLE_BASELINE, ROLE_CONFIRM):
            assert spec.baseline is not None
            return dict(spec.baseline.parameters), {}
        if slot.role == ROLE_ARM:
            arm = next(a for a in spec.arms or [] if a.name == slot.config)
            return dict(arm.parameters), {}
        k = slot.search_index
        assert k is not None
        runs = search_runs.get(k) or self._ledger.runs.get(k)
        if runs:
            first = runs[min(runs)]
            state = dict(first.search_state or {}) if slot.role == ROLE_SEARCH else {}
            return dict(first.parameters), state
        s = self.search.suggest(k)
        return dict(s.parameters), dict(s.state)

    def _seed(self, slot: Slot) -> int:
        seed = self.search.seed
        if slot.role == ROLE_SEARCH:
            if slot.repeat == 0:  # what a search without repeats always gave
                return derive_seed(seed, "trial", slot.search_index)
            return derive_seed(seed, "trial", slot.search_index, "repeat", slot.repeat)
        return derive_seed(seed, slot.role, slot.config, slot.repeat)

    def _config(
        self, k: int, runs: Mapping[int, TrialRecord], outcome: Mapping[int, str | None]
    ) -> _Config:
        """Configuration k's outcome from its runs' outcomes."""
        cfg = _Config(k, dict(runs))
        finals = {r: outcome.get(v.index) for r, v in runs.items()}
        first = runs.get(0)
        pruned = self.search.should_prune(k) or (first is not None and finals.get(0) == "Pruned")
        cfg.succeeded = [
            runs[r] for r in sorted(runs) if finals[r] == "Succeeded" and runs[r].values
        ]
        if pruned:
            if all(v.phase not in ACTIVE_PHASES or finals[r] is not None
                   for r, v in runs.items()):  # fmt: skip
                cfg.phase = "Pruned"
            return cfg
        if len(runs) < self.spec.repeats or any(f is None for f in finals.values()):
            return cfg
        if cfg.succeeded:
            width = len(self.spec.all_objectives)
            rows = [v.values for v in cfg.succeeded if v.values and len(v.values) == width]
            if rows:
                cfg.values = tuple(sum(col) / len(col) for col in zip(*rows, strict=True))
                cfg.phase = "Succeeded"
                return cfg
        cfg.phase = "Failed" if "Failed" in finals.values() else next(iter(finals.values()))
        return cfg

    def _sync(self, search_runs: Mapping[int, Mapping[int, TrialRecord]]) -> None:
        # Configurations the study already knows the end of cannot change it any
        # more: skipping them keeps a plan's sync to those still in play rather
        # than every configuration so far.
        pending = [k for k in sorted(search_runs) if not self.search.is_finished(k)]
        for k in pending:
            runs = search_runs[k]
            first = runs[min(runs)]
            self.search.restore(k, first.parameters, first.search_state)
        for k in pending:
            runs = search_runs[k]
            first = runs.get(0)
            if first is not None and first.intermediate:
                self.search.report(k, first.intermediate)
            outcome = {v.index: self._final_phase(v, {}) for v in runs.values()}
            cfg = self._config(k, runs, outcome)
            if cfg.phase is not None:
                self.search.finish(k, cfg.phase, cfg.values)
                self._final_configs[k] = cfg
                self._keep_best(cfg)

    def _settle(
        self,
        live: Sequence[TrialRecord],
        latest: Mapping[int, TrialRecord],
        slots: Mapping[int, Slot],
    ) -> None:
        """Move the indices this plan found settled into the ledger (see :class:`_Ledger`)."""
        settled: dict[int, tuple[_Config, str]] = {}
        for index, view in latest.items():
            slot = slots[index]
            cfg = self._final_configs.get(slot.search_index)  # type: ignore[arg-type]
            if slot.role != ROLE_SEARCH or cfg is None:
                continue
            phase = self._final_phase(view, {})
            if phase is not None:
                settled[index] = (cfg, phase)
        if not settled:
            return
        attempts: dict[int, list[TrialRecord]] = {}
        for view in live:
            if view.index in settled:
                attempts.setdefault(view.index, []).append(view)
        for index, (cfg, phase) in settled.items():
            self._ledger.settle(attempts[index], latest[index], slots[index], cfg, phase)

    def _final_phase(self, view: TrialRecord, stopping: Mapping[str, StopTrial]) -> str | None:
        """The trial's final phase, or None while it may still run (or be retried)."""
        if view.name in stopping:
            return stopping[view.name].phase
        if view.phase not in TERMINAL_PHASES:
            return None
        if view.phase == "Failed" and view.retryable and view.attempt < self.spec.trial.retries:
            return None
        return view.phase

    def _search_end(self, configs: _Merged, best: Best | None) -> tuple[str, str] | None:
        """(reason, message) once the search is over, else None."""
        spec = self.spec
        objectives = spec.all_objectives
        if best is not None and len(objectives) == 1 and meets_goal(best.values[0], objectives[0]):
            return (
                "GoalReached",
                f"trial {best.name} reached {objectives[0].metric} = {best.values[0]:g} "
                f"(goal {objectives[0].goal:g})",
            )
        limit = self._limit()
        ledger = self._ledger
        settled, live = configs.settled, configs.live
        done = ledger.done_below(limit) + sum(
            1 for k, c in live.items() if k < limit and c.phase is not None and k not in settled
        )
        if done < limit:
            return None
        succeeded = ledger.configs_succeeded + sum(
            1 for k, c in live.items() if c.phase == "Succeeded" and k not in settled
        )
        if succeeded == 0:
            return "NoTrialSucceeded", f"all {limit} trials ended and none succeeded"
        reason = "BudgetExhausted" if limit == spec.budget.max_trials else "SearchSpaceExhausted"
        what = "trials" if spec.repeats == 1 else f"configurations ({spec.repeats} runs each)"
        return reason, f"all {limit} {what} ended; {succeeded} succeeded"

    def _top(self, configs: Mapping[int, _Config]) -> list[str]:
        """The confirmation's configurations: the best ``confirm.top`` of the search."""
        assert self.spec.confirm is not None
        direction = self.spec.all_objectives[0].direction
        done = [c for c in configs.values() if c.phase == "Succeeded" and c.values]
        sign = -1.0 if direction == "maximize" else 1.0
        done.sort(key=lambda c: (sign * c.values[0], c.k))  # type: ignore[index]
        return [search_config(c.k) for c in done[: self.spec.confirm.top]]

    def _finished(
        self,
        total: int,
        failed: int,
        succeeded: int,
        outcome: Mapping[int, str | None],
        wanted: Iterator[Slot],
        by_slot: Mapping[Slot, TrialRecord],
        search_end: tuple[str, str] | None,
        now: float,
        started_at: float | None,
    ) -> FinishExperiment | None:
        spec = self.spec
        limit_failed = spec.budget.max_failed_trials
        if limit_failed is not None and failed > limit_failed:
            return FinishExperiment(
                "Failed",
                "TooManyFailures",
                f"{failed} trials failed, more than maxFailedTrials ({limit_failed})",
            )
        deadline = spec.budget.deadline_seconds
        past_deadline = (
            deadline is not None and started_at is not None and now - started_at >= deadline
        )
        # A goal reached wins over the deadline, as it always did; the rest of
        # the design (arms, baseline, confirmation) must have run to finish.
        complete = (spec.arms or search_end is not None) and all(
            slot in by_slot and outcome.get(by_slot[slot].index) is not None for slot in wanted
        )
        goal = search_end is not None and search_end[0] == "GoalReached"
        if past_deadline and not (goal and complete):
            phase = "Succeeded" if succeeded else "Failed"
            return FinishExperiment(
                phase, "DeadlineExceeded", f"the deadline ({spec.budget.deadline}) passed"
            )
        if search_end is not None and search_end[0] == "NoTrialSucceeded":
            return FinishExperiment("Failed", *search_end)
        if not complete:
            return None
        if spec.arms:
            if succeeded == 0:
                return FinishExperiment(
                    "Failed", "NoTrialSucceeded", f"all {total} trials ended and none succeeded"
                )
            arms = len(spec.arms) + (spec.baseline is not None)
            return FinishExperiment(
                "Succeeded",
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
        return FinishExperiment("Succeeded", reason, message)

    def _best(
        self,
        configs: Mapping[int, _Config],
        by_slot: Mapping[Slot, TrialRecord],
        outcome: Mapping[int, str | None],
    ) -> tuple[Best | None, list[Best]]:
        directions = [o.direction for o in self.spec.all_objectives]
        done: list[Best] = []
        if self.spec.arms:
            for name, views in _arm_runs(by_slot).items():
                ok = [v for v in views if outcome.get(v.index) == "Succeeded" and v.values]
                rows = [v.values for v in ok if v.values and len(v.values) == len(directions)]
                if rows:
                    means = tuple(sum(c) / len(c) for c in zip(*rows, strict=True))
                    first = ok[0]
                    done.append(
                        Best(first.name, first.index, first.parameters, means, name, len(rows),
                             first.artifact_uri)
                    )  # fmt: skip
        elif len(directions) == 1:
            # Only a configuration the search was told the end of has succeeded,
            # and _sync keeps the best of those as they come.
            top = self._best_final
            if top is None:
                return None, []
            first = top.succeeded[0]
            best = Best(first.name, first.index, first.parameters, top.values,  # type: ignore[arg-type]
                        search_config(top.k), len(top.succeeded), first.artifact_uri)  # fmt: skip
            return best, [best]
        else:
            for k in sorted(configs):
                cfg = configs[k]
                if cfg.phase != "Succeeded" or cfg.values is None:
                    continue
                first = cfg.succeeded[0]
                done.append(
                    Best(first.name, first.index, first.parameters, cfg.values, search_config(k),
                         len(cfg.succeeded), first.artifact_uri)
                )  # fmt: skip
        if not done:
            return None, []
        if len(directions) == 1:
            top = done[0]
            for candidate in done[1:]:
                if better(candidate.values[0], top.values[0], directions[0]):
                    top = candidate
            return top, [top]
        front = [
            a for a in done if not any(dominates(b.values, a.values, directions) for b in done)
        ]
        front.sort(key=lambda b: b.index)
        return None, front

    # -- the comparison ----------------------------------------------------------------

    def _compare(
        self,
        by_slot: Mapping[Slot, TrialRecord],
        outcome: Mapping[int, str | None],
        configs: Mapping[int, _Config],
        search_end: tuple[str, str] | None,
        top: list[str],
    ) -> list[dict[str, Any]] | None:
        spec = self.spec
        objective = spec.all_objectives[0]
        has_baseline = spec.baseline is not None
        selection = ""
        if spec.arms:
            source = "arms"
            names = ([BASELINE] if has_baseline else []) + [a.name for a in spec.arms]
            reference = names[0]
            runs = _arm_runs(by_slot)
            planned = {name: spec.repeats for name in names}
        elif spec.confirm is not None and top:
            source = "confirm"
            names = ([BASELINE] if has_baseline else []) + top
            reference = names[0]
            runs = {
                name: [v for s, v in by_slot.items() if s.role == ROLE_CONFIRM and s.config == name]
                for name in names
            }
            planned = {name: spec.confirm.repeats for name in names}
        elif has_baseline and spec.confirm is None:
            source = "search"
            tried = sorted(k for k, c in configs.items() if c.runs)
            names = [BASELINE] + [search_config(k) for k in tried]
            reference = BASELINE
            runs = {BASELINE: [v for s, v in by_slot.items() if s.role == ROLE_BASELINE]}
            for k in tried:
                runs[search_config(k)] = [configs[k].runs[r] for r in sorted(configs[k].runs)]
            planned = {name: spec.repeats for name in names}
            if len(tried) > 1:
                selection = (
                    f"one of {len(tried)} configurations the search tried, judged on the runs "
                    "that chose them: the best look better than they are (spec.confirm "
                    "re-runs them with fresh seeds)"
                )
        else:
            return None
        # Imported here: SciPy's statistics take seconds to import, and most
        # experiments (a search without a baseline) never compare.
        from trialforge.engine.comparison import Group, comparison_rows

        groups = []
        for name in names:
            views = sorted(runs.get(name, []), key=lambda v: v.repeat)
            finals = [(v, outcome.get(v.index)) for v in views]
            values = tuple(float(v.values[0]) for v, o in finals if o == "Succeeded" and v.values)
            failed = sum(1 for _, o in finals if o == "Failed")
            ended = sum(1 for _, o in finals if o is not None)
            pending = max(0, planned[name] - ended)
            if source == "search" and name != BASELINE:
                k = int(name[1:])
                if configs[k].phase is not None:
                    pending = 0  # pruned, or the search ended: no more runs come
            if search_end is not None and source == "search":
                pending = 0 if name != BASELINE else pending
            params = views[0].parameters if views else self._named_parameters(name, configs)
            groups.append(
                Group(name, params, values, failed, pending, tuple(v.name for v in views))
            )
        key = (source, reference, tuple((g.name, g.values, g.failed, g.pending) for g in groups),
               spec.comparison.test, spec.comparison.alpha)  # fmt: skip
        if key != self._comparison_key:
            self._comparison = comparison_rows(
                groups,
                reference,
                objective.metric,
                objective.direction,
                alpha=spec.comparison.alpha,
                test=spec.comparison.test,
                source=source,
                seed=self.search.seed,
                selection_note=selection,
                # The bootstrap costs ~10 ms a candidate: drawn once the runs ended,
                # not at every trial's end on the way.
                bootstrap_resamples=0 if any(g.pending for g in groups) else 9999,
            )
            self._comparison_key = key
        return self._comparison

    def _named_parameters(self, name: str, configs: Mapping[int, _Config]) -> dict[str, Any]:
        spec = self.spec
        if name == BASELINE and spec.baseline is not None:
            return dict(spec.baseline.parameters)
        for arm in spec.arms or []:
            if arm.name == name:
                return dict(arm.parameters)
        if name.startswith("c") and name[1:].isdigit() and int(name[1:]) in configs:
            runs = configs[int(name[1:])].runs
            return dict(runs[min(runs)].parameters) if runs else {}
        return {}


def planned_trials(spec: ExperimentSpec) -> int:
    """How many trials the design makes at most (retries not counted)."""
    baseline = 1 if spec.baseline is not None else 0
    if spec.arms:
        return (len(spec.arms) + baseline) * spec.repeats
    total = ((spec.budget.max_trials or 0) + baseline) * spec.repeats
    if spec.confirm is not None:
        total += (spec.confirm.top + baseline) * spec.confirm.repeats
    return total


def design_summary(spec: ExperimentSpec) -> str:
    """The design in words, e.g. for ``trialforge validate``."""
    runs = f"{spec.repeats} runs each" if spec.repeats > 1 else "1 run each"
    baseline = " + the baseline" if spec.baseline is not None else ""
    if spec.arms:
        text = f"{len(spec.arms)} arms{baseline}, {runs}"
    else:
        text = f"{spec.budget.max_trials} configurations{baseline}, {runs}"
        if spec.confirm is not None:
            text += (
                f"; then the best {spec.confirm.top}{baseline} confirmed with "
                f"{spec.confirm.repeats} fresh runs"
            )
    return f"{text} (at most {planned_trials(spec)} trials)"


def _arm_runs(by_slot: Mapping[Slot, TrialRecord]) -> dict[str, list[TrialRecord]]:
    out: dict[str, list[TrialRecord]] = {}
    for slot, view in by_slot.items():
        if slot.role in (ROLE_ARM, ROLE_BASELINE):
            out.setdefault(slot.config, []).append(view)
    for views in out.values():
        views.sort(key=lambda v: v.repeat)
    return out


def _non_finite(intermediate: Mapping[int, float]) -> tuple[int, float] | None:
    for step in sorted(intermediate):
        if not math.isfinite(intermediate[step]):
            return step, intermediate[step]
    return None


def _counts(
    live: Sequence[TrialRecord],
    latest: Mapping[int, TrialRecord],
    stopping: Mapping[str, StopTrial],
    ledger: _Ledger,
) -> dict[str, int]:
    counts = dict.fromkeys(("pending", "running", "succeeded", "failed", "pruned", "cancelled"), 0)
    for phase, n in ledger.phases.items():
        counts[phase] += n
    for view in latest.values():
        phase = stopping[view.name].phase if view.name in stopping else view.phase
        counts[phase.lower()] += 1
    counts["retried"] = ledger.retried + sum(1 for v in live if v.attempt > 0)
    counts["total"] = len(ledger.indices) + len(latest)
    return counts
