"""The way in for every runtime: the API's rules plus the ones only the engine knows.

Which settings a sampler or pruner accepts is read from its Optuna constructor (see
:mod:`trialforge.engine.plugins`), so a setting Optuna gains is usable at once; the
API layer cannot ask Optuna, so the rule lives here and is handed to the API's
loader, which lists its errors with all the others.
"""

from __future__ import annotations

import inspect
import sys
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from trialforge.api.experiment import Experiment, ExperimentSpec
from trialforge.api.validation import ExperimentInvalid, FieldError
from trialforge.api.validation import load_experiment as _load_experiment
from trialforge.api.validation import load_experiment_file as _load_experiment_file
from trialforge.engine.errors import EngineError
from trialforge.engine.plugins import (
    PRUNERS,
    SAMPLERS,
    PrunerPlugin,
    SamplerPlugin,
    make_pruner,
    make_sampler,
    pruner_settings,
    sampler_settings,
    snake,
    unavailable,
)

__all__ = [
    "ExperimentInvalid",
    "FieldError",
    "check_settings",
    "load_experiment",
    "load_experiment_file",
]


def check_settings(spec: ExperimentSpec) -> Iterator[FieldError]:
    """Every search and early-stopping setting is a keyword its Optuna class accepts,
    of the type it is annotated with, and the sampler and pruner can be built with
    them: Optuna's own checks run now, not when the first trial is suggested.
    An algorithm whose sampler needs a package this Python lacks is refused here
    (the CRD refuses it on a cluster): offered only where it works."""
    yield from _missing_package(spec)
    unknown = list(_unknown_settings(spec))
    yield from unknown
    if unknown:
        return
    search, stopping = spec.search, spec.early_stopping
    sampler = SAMPLERS[search.algorithm]
    pruner = PRUNERS[stopping.algorithm]
    typed = list(_typed("spec.search.settings", sampler, search.settings))
    typed += _typed("spec.earlyStopping.settings", pruner, stopping.settings)
    yield from typed
    if typed:
        return
    # A sampler whose package is missing cannot be built; _missing_package said so.
    if search.settings and unavailable(search.algorithm) is None:
        try:
            # The grid's values do not change which settings are valid: one point.
            make_sampler(search.algorithm, 0, search.settings, spec.budget.parallelism, {"x": [0]})
        except EngineError as exc:
            yield _blame("spec.search.settings", search.settings, str(exc))
    if stopping.settings:
        try:
            make_pruner(stopping.algorithm, stopping.settings)
        except EngineError as exc:
            yield _blame("spec.earlyStopping.settings", stopping.settings, str(exc))


def _missing_package(spec: ExperimentSpec) -> Iterator[FieldError]:
    why = unavailable(spec.search.algorithm)
    if why is not None:
        yield FieldError("spec.search.algorithm", why)


_STRICT = ConfigDict(strict=True, arbitrary_types_allowed=True)


def _hints(cls: type) -> dict[str, Any]:
    """The constructor's annotations that can be read, one by one (Optuna writes
    them as strings, and some name types imported only for type checkers)."""
    namespace = {**vars(typing), **vars(sys.modules[cls.__module__])}
    out: dict[str, Any] = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        annotation = param.annotation
        try:
            out[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
        except Exception:  # an annotation that cannot be read checks nothing
            continue
    return out


def _typed(
    path: str, plugin: SamplerPlugin | PrunerPlugin, settings: Mapping[str, Any] | None
) -> Iterator[FieldError]:
    """Each setting against its annotation (``nStartupTrials: ten`` is no int)."""
    hints = _hints(plugin.cls) if settings else {}
    for key, value in (settings or {}).items():
        hint = hints.get(snake(key))
        if hint is None or hint is inspect.Parameter.empty:
            continue
        try:
            adapter: TypeAdapter[Any] = TypeAdapter(hint, config=_STRICT)
        except Exception:  # a type pydantic cannot check: Optuna's build still will
            continue
        try:
            adapter.validate_python(value)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            shown = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            yield FieldError(f"{path}.{key}", f"{reason}, not {value!r} (Optuna: {shown})")


def _blame(path: str, settings: Mapping[str, Any], message: str) -> FieldError:
    """Optuna's message, against the setting it names (it says reduction_factor)."""
    message = message.removeprefix(f"{path}: ")
    for key in settings:
        if snake(key) in message:
            return FieldError(f"{path}.{key}", f"Optuna refuses it: {message}")
    return FieldError(path, f"Optuna refuses them: {message}")


def _unknown_settings(spec: ExperimentSpec) -> Iterator[FieldError]:
    # Optuna's classes are read (and Optuna imported) only for a spec with settings.
    search, stopping = spec.search, spec.early_stopping
    for path, settings, accepted_of in (
        ("spec.search.settings", search.settings, lambda: sampler_settings(search.algorithm)),
        (
            "spec.earlyStopping.settings",
            stopping.settings,
            lambda: pruner_settings(stopping.algorithm),
        ),
    ):
        if not settings:
            continue
        accepted = accepted_of()
        for key in settings:
            if snake(key) not in accepted:
                allowed = ", ".join(sorted(accepted)) or "none"
                yield FieldError(
                    f"{path}.{key}", f"unknown setting; this algorithm accepts: {allowed}"
                )


def load_experiment(data: Any, source: str | None = None) -> Experiment:
    """Validate a parsed document; raise :class:`ExperimentInvalid` listing every problem."""
    return _load_experiment(data, source, (check_settings,))


def load_experiment_file(path: str) -> Experiment:
    """The one Experiment in a YAML file, validated as :func:`load_experiment` does."""
    return _load_experiment_file(path, (check_settings,))
