"""Which Optuna sampler and pruner each algorithm name stands for.

A small registry in the spirit of Optuna's own plug-in classes: one entry per
name the user may write, its factory, and the settings it accepts (read from
the Optuna constructor, so a setting Optuna gains is usable at once and a typo
is caught before a trial runs). The names are the API's
(:mod:`trialforge.api.vocabulary`); a unit test checks the registries hold
exactly those.

Optuna itself is imported when a class is first needed (a sampler or pruner
is built, or a setting checked), not with this module: ``trialforge validate``
of a spec without settings never needs it, and it costs about half a second.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trialforge.api.vocabulary import (
    NEEDS_OPTIONAL_PACKAGE,
    EarlyStoppingAlgorithm,
    SearchAlgorithm,
    missing_package_reason,
)
from trialforge.engine.errors import EngineError

if TYPE_CHECKING:
    import optuna


def _optuna_class(path: str) -> Any:
    """``optuna.samplers.RandomSampler`` from its dotted path, importing Optuna then."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@functools.cache
def _grid_sampler() -> type[optuna.samplers.GridSampler]:
    import optuna

    class _GridSampler(optuna.samplers.GridSampler):
        """GridSampler without its habit of stopping the study when the grid is used up.

        ``Study.stop`` only works inside ``optimize``; under ask/tell it raises.  The
        planner knows the grid's size and stops suggesting by itself.
        """

        def after_trial(self, *args: Any, **kwargs: Any) -> None:
            return None

    return _GridSampler


# Settings Trialforge sets itself; a user value would fight ours.
_RESERVED = {"seed", "search_space", "self", "constraints_func"}


@dataclass(frozen=True)
class SamplerPlugin:
    name: str
    path: str  # the Optuna class, e.g. optuna.samplers.RandomSampler
    requires: str | None = None  # an optional module the sampler imports
    defaults: Callable[[int], dict[str, Any]] | None = None  # parallelism -> kwargs
    # Grid and QMC walk one fixed sequence (shuffled or scrambled by the seed)
    # and find their place in it from the study; they need the same seed for
    # every suggestion.  The others draw fresh randomness per suggestion.
    sequence: bool = False
    # Whether one sampler object may serve every suggestion, re-seeded in place
    # (see :func:`reseed`).  Building a sampler seeds NumPy RandomStates from
    # the OS first, which costs more than a random suggestion itself; a sampler
    # that keeps other state between suggestions (GP caches its last fit as the
    # next fit's start) must be built afresh, or a restarted process, which
    # starts without that state, would suggest something else.
    reusable: bool = True

    @property
    def cls(self) -> type[optuna.samplers.BaseSampler]:
        return _optuna_class(self.path)  # type: ignore[no-any-return]

    def settings(self) -> set[str]:
        return _accepted(self.cls)


def reseed(sampler: optuna.samplers.BaseSampler, seed: int) -> bool:
    """Put ``sampler`` in the random state ``cls(seed=seed)`` starts in; False if it can't.

    Optuna's samplers keep their randomness in ``LazyRandomState`` objects (the
    sampler's own and those of the samplers it falls back to) seeded with the
    constructor's seed; seeding each again is the same as building it anew.
    """
    import optuna
    from optuna.samplers._lazy_random_state import LazyRandomState

    found = False
    for value in vars(sampler).values():
        if isinstance(value, LazyRandomState):
            value.rng.seed(seed)
            found = True
        elif isinstance(value, optuna.samplers.BaseSampler):
            found = reseed(value, seed) or found
    return found


@dataclass(frozen=True)
class PrunerPlugin:
    name: str
    path: str  # the Optuna class, e.g. optuna.pruners.MedianPruner

    @property
    def cls(self) -> type[optuna.pruners.BasePruner]:
        return _optuna_class(self.path)  # type: ignore[no-any-return]

    def settings(self) -> set[str]:
        return _accepted(self.cls)


def _accepted(cls: type) -> set[str]:
    params = inspect.signature(cls.__init__).parameters
    return {
        n
        for n, p in params.items()
        if n not in _RESERVED and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def _tpe_defaults(parallelism: int) -> dict[str, Any]:
    # With several trials in flight TPE would otherwise suggest near-identical
    # points to each; the constant liar treats running trials as bad guesses.
    return {"constant_liar": parallelism > 1, "multivariate": True}


# Keyed by the API's Literal types, so a type checker refuses a name the API lacks.
# Which samplers take several objectives is the API's to say (the CRD's CEL rule
# needs it): api.vocabulary.MULTI_OBJECTIVE_ALGORITHMS.
SAMPLERS: dict[SearchAlgorithm, SamplerPlugin] = {
    "random": SamplerPlugin("random", "optuna.samplers.RandomSampler"),
    "grid": SamplerPlugin("grid", "optuna.samplers.GridSampler", sequence=True),
    "tpe": SamplerPlugin("tpe", "optuna.samplers.TPESampler", defaults=_tpe_defaults),
    "cmaes": SamplerPlugin("cmaes", "optuna.samplers.CmaEsSampler", requires="cmaes"),
    "gp": SamplerPlugin("gp", "optuna.samplers.GPSampler", requires="torch", reusable=False),
    "qmc": SamplerPlugin(
        "qmc",
        "optuna.samplers.QMCSampler",
        defaults=lambda _: {"scramble": True},
        sequence=True,
    ),
    "nsga2": SamplerPlugin("nsga2", "optuna.samplers.NSGAIISampler"),
}

PRUNERS: dict[EarlyStoppingAlgorithm, PrunerPlugin] = {
    "none": PrunerPlugin("none", "optuna.pruners.NopPruner"),
    "median": PrunerPlugin("median", "optuna.pruners.MedianPruner"),
    "asha": PrunerPlugin("asha", "optuna.pruners.SuccessiveHalvingPruner"),
    "hyperband": PrunerPlugin("hyperband", "optuna.pruners.HyperbandPruner"),
}


def sampler_settings(algorithm: SearchAlgorithm) -> set[str]:
    plugin = SAMPLERS.get(algorithm)
    return plugin.settings() if plugin else set()


def pruner_settings(algorithm: EarlyStoppingAlgorithm) -> set[str]:
    plugin = PRUNERS.get(algorithm)
    return plugin.settings() if plugin else set()


def snake(key: str) -> str:
    """A camelCase setting as Optuna's keyword: nStartupTrials -> n_startup_trials.

    A digit starts no new word (CMA-ES's x0 and sigma0 stay as they are; pydantic's
    to_snake would make them x_0 and sigma_0, which no constructor takes).
    """
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _kwargs(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    return {snake(k): v for k, v in (settings or {}).items()}


def unavailable(algorithm: SearchAlgorithm) -> str | None:
    """Why this Python cannot build the algorithm's sampler (a package missing), or None."""
    module = SAMPLERS[algorithm].requires
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    if algorithm in NEEDS_OPTIONAL_PACKAGE:
        return missing_package_reason(algorithm, on_cluster=False)
    return (
        f"search algorithm {algorithm!r} needs the Python package {module!r}, which is not "
        "installed here (a dependency of trialforge: reinstall trialforge)"
    )


def make_sampler(
    algorithm: SearchAlgorithm,
    seed: int,
    settings: Mapping[str, Any] | None,
    parallelism: int,
    grid: Mapping[str, list[Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> optuna.samplers.BaseSampler:
    """The sampler ``algorithm`` names; ``extra`` are keyword arguments Trialforge
    sets itself (TPE's group for a conditional space, a constraints_func), which a
    user's settings may override where they are settings at all."""
    plugin = SAMPLERS[algorithm]
    why = unavailable(algorithm)
    if why is not None:
        raise EngineError(why)
    kwargs = plugin.defaults(parallelism) if plugin.defaults else {}
    kwargs.update(extra or {})
    kwargs.update(_kwargs(settings))
    try:
        if algorithm == "grid":
            return _grid_sampler()(dict(grid or {}), seed=seed, **kwargs)
        import optuna

        with warnings.catch_warnings():
            # QMC is marked experimental in Optuna; users chose it knowingly.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return plugin.cls(seed=seed, **kwargs)  # type: ignore[call-arg]
    except (TypeError, ValueError) as exc:
        raise EngineError(f"spec.search.settings: {exc}") from None


def make_pruner(
    algorithm: EarlyStoppingAlgorithm, settings: Mapping[str, Any] | None
) -> optuna.pruners.BasePruner:
    plugin = PRUNERS[algorithm]
    try:
        return plugin.cls(**_kwargs(settings))
    except (TypeError, ValueError) as exc:
        raise EngineError(f"spec.earlyStopping.settings: {exc}") from None
