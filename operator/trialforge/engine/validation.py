"""The way in for every runtime: the API's rules plus the ones only the engine knows.

Which settings a sampler or pruner accepts is read from its Optuna constructor (see
:mod:`trialforge.engine.plugins`), so a setting Optuna gains is usable at once; the
API layer cannot ask Optuna, so the rule lives here and is handed to the API's
loader, which lists its errors with all the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic.alias_generators import to_snake

from trialforge.api.experiment import Experiment, ExperimentSpec
from trialforge.api.validation import ExperimentInvalid, FieldError
from trialforge.api.validation import load_experiment as _load_experiment
from trialforge.api.validation import load_experiment_file as _load_experiment_file
from trialforge.engine.plugins import pruner_settings, sampler_settings

__all__ = [
    "ExperimentInvalid",
    "FieldError",
    "check_settings",
    "load_experiment",
    "load_experiment_file",
]


def check_settings(spec: ExperimentSpec) -> Iterator[FieldError]:
    """Every search and early-stopping setting is a keyword its Optuna class accepts."""
    for path, settings, accepted in (
        ("spec.search.settings", spec.search.settings, sampler_settings(spec.search.algorithm)),
        (
            "spec.earlyStopping.settings",
            spec.early_stopping.settings,
            pruner_settings(spec.early_stopping.algorithm),
        ),
    ):
        for key in settings or {}:
            if to_snake(key) not in accepted:
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
