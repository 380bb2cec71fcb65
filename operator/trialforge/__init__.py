"""Trialforge: distributed ML experiments on Kubernetes and on your laptop.

The public surface: ``report()`` and friends for trainers, and the API models.
Everything else is internal and free to change.

The API models are imported lazily (PEP 562): ``import trialforge`` alone costs
only the standard library, so the trainer-side client and the metrics collector
sidecar (which must stay small) never load pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trialforge.client import checkpoint_dir, log_artifact, parameters, report, seed

if TYPE_CHECKING:
    from trialforge.api import Experiment, ExperimentSpec, Observation, Trial
    from trialforge.engine.validation import (
        ExperimentInvalid,
        load_experiment,
        load_experiment_file,
    )

__version__ = "0.1.0"

_API = frozenset({"Experiment", "ExperimentSpec", "Observation", "Trial"})
# The loaders come from the engine: they add the rules the API layer cannot check
# itself (which settings each Optuna sampler and pruner accepts).
_LOADERS = frozenset({"ExperimentInvalid", "load_experiment", "load_experiment_file"})


def __getattr__(name: str) -> Any:
    if name in _API:
        from trialforge import api

        return getattr(api, name)
    if name in _LOADERS:
        from trialforge.engine import validation

        return getattr(validation, name)
    raise AttributeError(f"module 'trialforge' has no attribute {name!r}")


__all__ = [
    "Experiment",
    "ExperimentInvalid",
    "ExperimentSpec",
    "Observation",
    "Trial",
    "__version__",
    "checkpoint_dir",
    "load_experiment",
    "load_experiment_file",
    "log_artifact",
    "parameters",
    "report",
    "seed",
]
