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
        self.indices: set[int] = set()
        self.outcome: dict[int, TrialPhase] = {}  # settled index -> final phase
        self.configs: dict[int, Config] = {}  # the settled trials' configurations
        self.runs: dict[int, dict[int, TrialRecord]] = {}  # k -> repeat -> latest attempt
        self.phases: dict[str, int] = {}  # lower-case phase -> latest attempts
        self.retried = 0  # attempts > 0
        self.disruptions = 0  # runs ended by disruption, over every attempt
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
        cfg: Config,
        outcome: TrialPhase,
    ) -> None:
        """Add an index: its attempts, the latest one, its slot and configuration, its outcome."""
        for view in views:
            self.views[view.name] = view
            self.retried += view.attempt > 0
            self.disruptions += view.disruptions
        index = latest.index
        self.indices.add(index)
        self.outcome[index] = outcome
        phase = latest.phase.lower()
        self.phases[phase] = self.phases.get(phase, 0) + 1
        self.failed += outcome == TrialPhase.FAILED
        self.succeeded += outcome == TrialPhase.SUCCEEDED
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
