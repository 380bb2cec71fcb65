"""The settled trials of one spec, summed up once so that a plan need not look at them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from trialforge.api.experiment import ExperimentSpec
from trialforge.api.status import TrialPhase
from trialforge.engine.design import Slot
from trialforge.engine.outcome import Config
from trialforge.engine.record import TrialRecord


class Ledger:
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
        self._ids: set[int] = set()  # id() of each of them (self.views keeps them alive)
        self.indices: set[int] = set()
        self.outcome: dict[int, TrialPhase] = {}  # settled index -> final phase
        self.configs: dict[int, Config] = {}  # the settled trials' configurations
        self.runs: dict[int, dict[int, TrialRecord]] = {}  # k -> repeat -> latest attempt
        self.phases: dict[str, int] = {}  # lower-case phase -> latest attempts
        self.retried = 0  # attempts > 0
        self.infeasible = 0  # latest attempts that violated spec.constraints
        self.disruptions = 0  # runs ended by disruption, over every attempt
        self.failed = 0  # outcomes
        self.succeeded = 0
        self.configs_succeeded = 0
        self.highest = -1  # the highest configuration number
        self.first_free = 0  # every index below it is settled
        self._done: tuple[int, int] = (-1, 0)  # (limit, configurations below it)

    def live(
        self, trials: Sequence[TrialRecord], omitted: bool = False
    ) -> list[TrialRecord] | None:
        """The trials that are not settled; None if the world no longer matches the ledger.

        ``omitted``: ``trials`` leaves out the settled trials, which the adapter
        promises have not changed (:meth:`Planner.plan`'s ``settled_omitted``);
        only the trials given are checked, so a plan costs what is in play.
        """
        views = self.views
        if not views:
            return list(trials)
        if omitted:
            indices = self.indices
            if any(v.name in views or v.index in indices for v in trials):
                return None
            return list(trials)
        # The adapters hand the same objects over again for trials that did not
        # change (the local runtime's records, the kube cache's), so a plan over
        # 10,000 trials costs a set lookup per trial here; a world of equal but
        # new objects takes the slower path below.
        ids = self._ids
        live = [view for view in trials if id(view) not in ids]
        if len(trials) - len(live) == len(views):
            indices = self.indices
            if any(view.index in indices for view in live):
                return None
            return live
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
        cfg: Config,
        outcome: TrialPhase,
    ) -> None:
        """Add an index: its attempts, the latest one, its slot and configuration, its outcome."""
        for view in views:
            old = self.views.get(view.name)
            if old is not None:
                self._ids.discard(id(old))  # no longer kept alive: its id may be reused
            self.views[view.name] = view
            self._ids.add(id(view))
            self.retried += view.attempt > 0
            self.disruptions += view.disruptions
        index = latest.index
        self.indices.add(index)
        self.outcome[index] = outcome
        phase = latest.phase.lower()
        self.phases[phase] = self.phases.get(phase, 0) + 1
        self.failed += outcome == TrialPhase.FAILED
        self.succeeded += outcome == TrialPhase.SUCCEEDED
        self.infeasible += latest.feasible is False
        k = cfg.k
        runs = self.runs.setdefault(k, {})
        if slot.repeat not in runs or runs[slot.repeat].index > index:
            runs[slot.repeat] = latest
        if k not in self.configs:
            self.configs[k] = cfg
            self.configs_succeeded += cfg.phase == TrialPhase.SUCCEEDED
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


class Merged(Mapping[int, Any]):
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
