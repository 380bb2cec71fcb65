"""The search: Optuna's ask/tell behind our own small interface.

One :class:`Search` per experiment holds an in-memory Optuna study whose trial
numbers are the experiment's trial indices.  It is a cache of the world, never
the truth: :meth:`Search.sync` brings it in line with the trials as they are
recorded, so a process that restarts rebuilds the same study from the same
records and goes on with the same suggestions.

Determinism comes from seeding the sampler afresh for every suggestion with a
seed derived from the experiment's seed and the trial index: what index *n*
gets depends only on the history, not on how many random numbers an earlier
process happened to draw.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState, create_trial

from trialforge.api.experiment import ExperimentSpec
from trialforge.engine import plugins, space
from trialforge.engine.errors import EngineError

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)

_STATES = {
    "Succeeded": TrialState.COMPLETE,
    "Pruned": TrialState.PRUNED,
    "Failed": TrialState.FAIL,
    "Cancelled": TrialState.FAIL,
}


@functools.lru_cache(maxsize=4096, typed=True)  # a trial's seeds are derived more than once
def derive_seed(seed: int, *parts: object) -> int:
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class Suggestion:
    index: int
    parameters: dict[str, Any]
    seed: int
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Known:
    reported_step: int = -1
    final: bool = False
    # Optuna's pruners decide at the step a value is reported (ASHA only at a
    # rung's step), so a "stop" decision is latched rather than asked again.
    prune: bool = False
    judged: int = -1  # how many trials had completed when it was last judged


class Search:
    """Suggests configurations, hears intermediate and final values, decides pruning."""

    def __init__(self, spec: ExperimentSpec, study_name: str) -> None:
        self.spec = spec
        self.seed = spec.search.seed if spec.search.seed is not None else derive_seed(0, study_name)
        self._distributions = space.distributions(spec.parameters)
        self._grid = space.grid(spec.parameters) if spec.search.algorithm == "grid" else None
        directions = [o.direction for o in spec.all_objectives]
        # Built now: fails fast on a missing optional package or bad settings.
        self._sampler = self._sampler_for(0)
        self._study = optuna.create_study(
            storage=InMemoryStorage(),
            study_name=study_name,
            directions=directions,
            sampler=self._sampler,
            pruner=plugins.make_pruner(spec.early_stopping.algorithm, spec.early_stopping.settings),
        )
        self._known: dict[int, _Known] = {}
        self._suggested: dict[int, Suggestion] = {}
        # Trials in the study, counted as they are added (ask, add_trial): the
        # in-memory storage copies its whole list to say how many it holds.
        self._size = 0
        self._prunes = not spec.multi_objective and not isinstance(
            self._study.pruner, optuna.pruners.NopPruner
        )
        # A median (percentile) pruner judges a trial's latest step against the
        # trials completed so far.  It is asked when new steps come and again when
        # one more trial completes, at the latest step only, so its verdict is a
        # function of the world as it is now, not of the order the planner heard
        # it in: a planner built afresh (a restart) judges the same.  (With
        # intervalSteps > 1, a batch that crosses an interval's first step is
        # judged at its last step.)  Rung pruners (ASHA, Hyperband) record each
        # rung as it is reached, asynchronous by design, and see every step.
        self._at_latest = self._prunes and isinstance(
            self._study.pruner, optuna.pruners.PercentilePruner
        )
        self._completed = 0

    # -- the world as recorded -------------------------------------------------

    @property
    def study(self) -> optuna.Study:
        """The underlying study, read-only by convention (reports and plots)."""
        return self._study

    @property
    def size(self) -> int:
        """How many trial indices the study holds (asked or restored)."""
        return self._size

    @property
    def prunes(self) -> bool:
        """Whether a pruner judges the trials' intermediate values."""
        return self._prunes

    def capacity(self) -> int | None:
        """How many distinct configurations the space holds, when finite and small."""
        return space.grid_size(self.spec.parameters) if self._grid is not None else None

    def restore(
        self,
        index: int,
        parameters: Mapping[str, Any],
        state: Mapping[str, Any] | None,
    ) -> None:
        """Add a trial recorded by an earlier process (or another replica)."""
        if index < self.size:
            return
        while index > self.size:
            # A gap: an index was decided but its trial never recorded (a crash
            # between the two, or a failed create).  Suggest it again; the
            # planner sees it missing and starts it.
            self.suggest(self.size)
        state = state or {}
        trial = create_trial(
            state=TrialState.RUNNING,
            params=dict(parameters),
            distributions={k: v for k, v in self._distributions.items() if k in parameters},
            system_attrs=dict(state.get("trial", {})),
        )
        self._study.add_trial(trial)
        self._size += 1
        for key, value in dict(state.get("study", {})).items():
            self._study._storage.set_study_system_attr(self._study._study_id, key, value)
        self._known[index] = _Known()

    def report(self, index: int, intermediate: Mapping[int, float], ended: bool = False) -> bool:
        """Record intermediate values of the first objective; True when the trial should stop.

        ``ended``: the trial has ended, and how is its verdict: its values are
        recorded (and shown to a rung pruner, which records the rungs it reached
        to judge others by), but what the pruner says of it is dropped.
        """
        known = self._known.setdefault(index, _Known())
        if known.final:
            return False
        trial_id = self._trial_id(index)
        storage = self._study._storage
        new = sorted(s for s in intermediate if s > known.reported_step)
        for step in new:
            value = float(intermediate[step])
            storage.set_trial_intermediate_value(trial_id, step, value)
            known.reported_step = step
            if not math.isfinite(value):
                known.prune = True
            elif self._prunes and not self._at_latest:
                # A rung pruner (ASHA, Hyperband) is shown every step, so the rung
                # it records is the same whether values arrive one by one or replayed.
                known.prune = self._should_prune(trial_id) or known.prune
        if ended:
            known.prune = False
            return False
        if (
            self._at_latest
            and not known.prune
            and known.reported_step >= 0
            and (new or known.judged != self._completed)
        ):
            known.prune = self._should_prune(trial_id)
        known.judged = self._completed
        return known.prune

    def should_prune(self, index: int) -> bool:
        known = self._known.get(index)
        return known is not None and not known.final and known.prune

    def is_finished(self, index: int) -> bool:
        """Whether the study was told this trial's final outcome."""
        known = self._known.get(index)
        return known is not None and known.final

    def finish(self, index: int, phase: str, values: tuple[float, ...] | None = None) -> None:
        """Tell the study a trial's final outcome (idempotent)."""
        known = self._known.setdefault(index, _Known())
        if known.final:
            return
        state = _STATES[phase]
        if state == TrialState.COMPLETE and values is None:
            state = TrialState.FAIL
        self._study.tell(index, list(values) if state == TrialState.COMPLETE else None, state=state)
        known.final = True
        self._completed += state == TrialState.COMPLETE

    # -- suggestions ---------------------------------------------------------------

    def suggest(self, index: int) -> Suggestion:
        """The configuration for trial ``index`` (the next one, or one already asked)."""
        if index in self._suggested:
            return self._suggested[index]
        if index != self.size:
            raise ValueError(f"can only suggest index {self.size} next, not {index}")
        self._sampler = self._study.sampler = self._sampler_for(index)
        try:
            trial = self._study.ask(fixed_distributions=self._distributions)
        except Exception as exc:
            # Settings Optuna checks only once it samples (TPE's priorWeight: -1):
            # the spec's fault, said as such, never a traceback or a silent retry.
            raise EngineError(
                f"spec.search: the {self.spec.search.algorithm} sampler cannot suggest "
                f"trial {index}: Optuna says {type(exc).__name__}: {exc}"
            ) from exc
        self._size += 1
        params = trial.params  # a copy each time it is read
        parameters = {name: params[name] for name in self._distributions}
        suggestion = Suggestion(
            index=index,
            parameters=parameters,
            seed=derive_seed(self.seed, "trial", index),
            state=self._state(trial._trial_id),
        )
        self._suggested[index] = suggestion
        self._known[index] = _Known()
        return suggestion

    # -- internals -------------------------------------------------------------------

    def _sampler_for(self, index: int) -> optuna.samplers.BaseSampler:
        """A sampler in the state a fresh one seeded for trial ``index`` has."""
        algorithm = self.spec.search.algorithm
        plugin = plugins.SAMPLERS[algorithm]
        seed = derive_seed(self.seed, "sampler", 0 if plugin.sequence else index)
        current = getattr(self, "_sampler", None)
        if current is not None and plugin.reusable and plugins.reseed(current, seed):
            return current
        return plugins.make_sampler(
            algorithm, seed, self.spec.search.settings, self.spec.budget.parallelism, self._grid
        )

    def _trial_id(self, index: int) -> int:
        return self._study._storage.get_trial_id_from_study_id_trial_number(
            self._study._study_id, index
        )

    def _should_prune(self, trial_id: int) -> bool:
        if self.spec.multi_objective:
            return False
        trial = self._study._storage.get_trial(trial_id)
        try:
            return bool(self._study.pruner.prune(self._study, trial))
        except Exception as exc:
            raise EngineError(
                f"spec.earlyStopping: the {self.spec.early_stopping.algorithm} pruner cannot "
                f"judge trial {trial.number}: Optuna says {type(exc).__name__}: {exc}"
            ) from exc

    def _state(self, trial_id: int) -> dict[str, Any]:
        storage = self._study._storage
        return {
            "trial": dict(storage.get_trial_system_attrs(trial_id)),
            "study": dict(storage.get_study_system_attrs(self._study._study_id)),
        }
