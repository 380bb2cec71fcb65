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
import inspect
import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers._base import _CONSTRAINTS_KEY
from optuna.storages import InMemoryStorage
from optuna.trial import FrozenTrial, TrialState, create_trial

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


# Optuna 5 reads a trial's constraints from its system attributes (what
# Trial.set_constraint writes; constraints_func is deprecated there); Optuna 4's
# samplers use them only when given a constraints_func.
_NEEDS_CONSTRAINTS_FUNC = int(optuna.__version__.split(".")[0]) < 5


@dataclass(frozen=True)
class WarmTrial:
    """A finished trial of an earlier experiment, as the sampler is told it."""

    parameters: Mapping[str, Any]
    values: tuple[float, ...]
    violations: tuple[float, ...] | None = None


def _violations(width: int, trial: FrozenTrial) -> Sequence[float]:
    """Optuna 4's constraints_func: what :meth:`Search.finish` stored (a pruned trial,
    whose constraint metrics are unknown, counts as feasible)."""
    stored = trial.system_attrs.get(_CONSTRAINTS_KEY)
    return tuple(stored) if stored else (0.0,) * width


def takes_constraints(cls: type) -> bool:
    """Whether a sampler class learns from constraints (Optuna's ``constraints_func``)."""
    return "constraints_func" in inspect.signature(cls.__init__).parameters


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

    def __init__(
        self, spec: ExperimentSpec, study_name: str, warm: Sequence[WarmTrial] = ()
    ) -> None:
        self.spec = spec
        self.seed = spec.search.seed if spec.search.seed is not None else derive_seed(0, study_name)
        self._distributions = space.distributions(spec.parameters)
        self._conditional = spec.conditional
        grid = spec.search.algorithm == "grid"
        # A conditional grid (or one with initial points, which Optuna's grid
        # sampler would visit again) lists its valid configurations, in an order
        # the seed shuffles; each suggestion takes the first one no trial holds yet.
        own_grid = grid and (self._conditional or bool(spec.initial_points))
        self._grid = space.grid(spec.parameters) if grid and not own_grid else None
        self._points: list[dict[str, Any]] | None = None
        if own_grid:
            self._points = space.conditional_grid(spec)
            random.Random(derive_seed(self.seed, "grid")).shuffle(self._points)
        self._initial = [dict(p) for p in spec.initial_points or []]
        self._constrained = bool(spec.constraints)
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
        # Warm-start trials come first in the study; trial index i is study trial base + i.
        self._base = 0
        for w in warm:
            self._tell_warm(w)

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
    def warm_trials(self) -> int:
        """How many trials of an earlier experiment the sampler was told."""
        return self._base

    @property
    def prunes(self) -> bool:
        """Whether a pruner judges the trials' intermediate values."""
        return self._prunes

    def capacity(self) -> int | None:
        """How many distinct configurations the space holds, when finite and small."""
        if self._points is not None:
            return len(self._points)
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

    def finish(
        self,
        index: int,
        phase: str,
        values: tuple[float, ...] | None = None,
        violations: tuple[float, ...] | None = None,
    ) -> None:
        """Tell the study a trial's final outcome (idempotent); ``violations`` are its
        constraints' (> 0: violated), for the samplers that learn from them."""
        known = self._known.setdefault(index, _Known())
        if known.final:
            return
        state = _STATES[phase]
        if state == TrialState.COMPLETE and values is None:
            state = TrialState.FAIL
        if violations is not None:
            # Where the samplers that handle constraints (TPE, NSGA-II, GP) read them.
            self._study._storage.set_trial_system_attr(
                self._trial_id(index), _CONSTRAINTS_KEY, tuple(violations)
            )
        told = list(values) if state == TrialState.COMPLETE and values is not None else None
        self._study.tell(self._base + index, told, state=state)
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
        fixed = self._fixed(index)
        if fixed is not None:
            self._study.enqueue_trial(fixed)
        try:
            if self._conditional:
                # Define-by-run: a parameter is asked for only once its parents say it exists.
                trial = self._study.ask()
                for p in self.spec.parameters:
                    if p.name in self.spec.active(trial.params):
                        _suggest(trial, p.name, self._distributions[p.name])
            else:
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
        parameters = {name: params[name] for name in self._distributions if name in params}
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

    def _fixed(self, index: int) -> dict[str, Any] | None:
        """What trial ``index`` is fixed to: an initial point, or a conditional grid's
        next configuration; None when the sampler decides."""
        if index < len(self._initial):
            return self._initial[index]
        if self._points is None:
            return None
        storage = self._study._storage
        held = {
            space.point_key(t.params)
            for t in storage.get_all_trials(self._study._study_id, deepcopy=False)[self._base :]
        }
        return next((p for p in self._points if space.point_key(p) not in held), None)

    def _tell_warm(self, warm: WarmTrial) -> None:
        """Add a finished trial of an earlier experiment (before any of this one's)."""
        attrs: dict[str, Any] = {}
        if self._constrained:
            width = len(self.spec.constraints or ())
            attrs[_CONSTRAINTS_KEY] = tuple(warm.violations or (0.0,) * width)
        trial = create_trial(
            state=TrialState.COMPLETE,
            params=dict(warm.parameters),
            distributions={k: v for k, v in self._distributions.items() if k in warm.parameters},
            values=list(warm.values),
            system_attrs=attrs,
        )
        self._study.add_trial(trial)
        self._base += 1

    def _sampler_for(self, index: int) -> optuna.samplers.BaseSampler:
        """A sampler in the state a fresh one seeded for trial ``index`` has."""
        algorithm = self.spec.search.algorithm
        plugin = plugins.SAMPLERS[algorithm]
        seed = derive_seed(self.seed, "sampler", 0 if plugin.sequence else index)
        current = getattr(self, "_sampler", None)
        if current is not None and plugin.reusable and plugins.reseed(current, seed):
            return current
        settings = dict(self.spec.search.settings or {})
        extra: dict[str, Any] = {}
        if algorithm == "grid" and self._points is not None:
            # Every value is fixed (the next valid configuration): any sampler will do.
            return optuna.samplers.RandomSampler(seed=seed)
        if (
            self._conditional
            and algorithm == "tpe"
            and "group" not in settings
            and settings.get("multivariate", True) is not False
        ):
            # TPE's way with define-by-run spaces: one model per set of parameters seen together.
            extra["group"] = True
        accepted = inspect.signature(plugin.cls.__init__).parameters
        if self._conditional and algorithm != "tpe" and "warn_independent_sampling" in accepted:
            # A define-by-run space falls back to independent sampling by design.
            extra["warn_independent_sampling"] = False
        if self._constrained and _NEEDS_CONSTRAINTS_FUNC and takes_constraints(plugin.cls):
            width = len(self.spec.constraints or ())
            extra["constraints_func"] = functools.partial(_violations, width)
        return plugins.make_sampler(
            algorithm, seed, settings, self.spec.budget.parallelism, self._grid, extra
        )

    def _trial_id(self, index: int) -> int:
        return self._study._storage.get_trial_id_from_study_id_trial_number(
            self._study._study_id, self._base + index
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


def _suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    """Ask ``trial`` for one parameter of ``distribution`` (define-by-run)."""
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, step=distribution.step,
            log=distribution.log,
        )  # fmt: skip
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step,
            log=distribution.log,
        )  # fmt: skip
    assert isinstance(distribution, CategoricalDistribution)
    return trial.suggest_categorical(name, list(distribution.choices))
