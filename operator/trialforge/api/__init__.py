"""The resource models: Experiment and Trial, spec and status."""

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
