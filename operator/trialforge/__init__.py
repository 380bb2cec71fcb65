"""Trialforge: distributed ML experiments on Kubernetes and on your laptop.

The public surface: ``report()`` and friends for trainers, and the API models.
Everything else is internal and free to change.
"""

from trialforge.api import (
    Experiment,
    ExperimentInvalid,
    ExperimentSpec,
    Observation,
    Trial,
    load_experiment,
    load_experiment_file,
)
from trialforge.client import parameters, report, seed

__version__ = "0.1.0"

__all__ = [
    "Experiment",
    "ExperimentInvalid",
    "ExperimentSpec",
    "Observation",
    "Trial",
    "__version__",
    "load_experiment",
    "load_experiment_file",
    "parameters",
    "report",
    "seed",
]
