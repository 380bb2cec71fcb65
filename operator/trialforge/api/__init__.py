"""The resource models: Experiment and Trial, spec and status.

The names below are loaded lazily (PEP 562), so that importing a light module
of this package (``trialforge.api.observation``, which the metrics collector
sidecar uses) does not import pydantic and the models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trialforge.api.experiment import (
        API_VERSION,
        GROUP,
        VERSION,
        BudgetSpec,
        CategoricalParameter,
        DiscreteParameter,
        EarlyStoppingSpec,
        Experiment,
        ExperimentSpec,
        FloatParameter,
        IntParameter,
        MetricsSpec,
        Objective,
        SearchSpec,
        TrialSpecTemplate,
    )
    from trialforge.api.observation import Observation
    from trialforge.api.status import ExperimentStatus, TrialStatus
    from trialforge.api.trial import Trial, TrialSpec, trial_name
    from trialforge.api.validation import (
        ExperimentInvalid,
        FieldError,
        load_experiment,
        load_experiment_file,
    )

_WHERE = {
    "trialforge.api.experiment": (
        "API_VERSION",
        "GROUP",
        "VERSION",
        "BudgetSpec",
        "CategoricalParameter",
        "DiscreteParameter",
        "EarlyStoppingSpec",
        "Experiment",
        "ExperimentSpec",
        "FloatParameter",
        "IntParameter",
        "MetricsSpec",
        "Objective",
        "SearchSpec",
        "TrialSpecTemplate",
    ),
    "trialforge.api.observation": ("Observation",),
    "trialforge.api.status": ("ExperimentStatus", "TrialStatus"),
    "trialforge.api.trial": ("Trial", "TrialSpec", "trial_name"),
    # The API's rules only; trialforge.load_experiment (engine.validation) adds the
    # engine's, and is the one every runtime uses.
    "trialforge.api.validation": (
        "ExperimentInvalid",
        "FieldError",
        "load_experiment",
        "load_experiment_file",
    ),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'trialforge.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "BudgetSpec",
    "CategoricalParameter",
    "DiscreteParameter",
    "EarlyStoppingSpec",
    "Experiment",
    "ExperimentInvalid",
    "ExperimentSpec",
    "ExperimentStatus",
    "FieldError",
    "FloatParameter",
    "IntParameter",
    "MetricsSpec",
    "Objective",
    "Observation",
    "SearchSpec",
    "Trial",
    "TrialSpec",
    "TrialSpecTemplate",
    "TrialStatus",
    "load_experiment",
    "load_experiment_file",
    "trial_name",
]
