"""The Experiment resource: what to optimise, over which parameters, how a trial runs.

Shape rules (types, ranges, one field against its neighbour) live on the models
so they surface with an exact field path.  Rules that span several parts of the
spec live in :mod:`trialforge.api.validation`.  Rules the API server can enforce
itself are also given to it as CEL (``x-kubernetes-validations``) next to the
Python rule, so ``kubectl apply`` refuses the same spec ``trialforge validate``
refuses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from trialforge.api.base import DURATION_PATTERN, WireModel, parse_duration
from trialforge.api.status import ExperimentStatus
from trialforge.api.vocabulary import (
    MULTI_OBJECTIVE_ALGORITHMS,
    NEEDS_OPTIONAL_PACKAGE,
    EarlyStoppingAlgorithm,
    SearchAlgorithm,
    missing_package_reason,
)

GROUP = "trialforge.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

PARAMETER_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Trial names are "<experiment>-<index>[-r<attempt>]" and Job/Service names derive
# from them; keeping experiment names short leaves room inside the 63-char limit.
EXPERIMENT_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_EXPERIMENT_NAME = 40

ParameterValue = str | int | float | bool

# Integers a parameter may hold: Kubernetes stores int64, but Optuna samples int
# parameters through floats and a JSON client (kubectl, a browser) reads numbers
# as doubles, so the limit is the largest integer a double holds exactly.
MAX_INT = 2**53
# Float bounds and steps: finite, with max - min and a step grid's arithmetic
# finite too, and no larger than an int64: the API server compares a bound with
# a value written as an integer (`max: 1`) as int64s, and a larger bound
# overflows there (every such spec was refused, "<= -9223372036854775808").
MAX_FLOAT = 1e15
# RFC 1123: a Kueue LocalQueue's name is a DNS subdomain, and Jobs name it in
# the label kueue.x-k8s.io/queue-name, whose values are at most 63 characters.
QUEUE_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
MAX_QUEUE_NAME = 63
MAX_FAILED_TRIALS = 1_000_000


class SpecModel(WireModel):
    """Base of the spec's models: a number is a number, a boolean a boolean.

    Strict, because pydantic's lax mode would take ``maxTrials: true`` as 1 and
    ``maxTrials: "4"`` as 4, which the API server's schema refuses; and finite,
    because ``.nan`` and ``.inf`` are no bound, step or goal (and not JSON).
    A float field still takes an integer (``min: 0``).
    """

    model_config = WireModel.model_config | {"strict": True, "allow_inf_nan": False}


def _positive_duration(value: str | None) -> str | None:
    if value is not None and parse_duration(value) <= 0:
        raise ValueError(f"{value!r} must be more than zero (e.g. 30s, 45m, 2h)")
    return value


# parameters[].when: the parameter exists only when every named parent (a
# categorical or discrete parameter defined earlier) takes one of the listed
# values.  Which parents exist, and in what order, is checked across the list
# (api.validation); the API server's CEL cannot within its cost budget.
When = dict[str, list[ParameterValue]]
_WHEN_FIELD_DESCRIPTION = (
    "Conditional parameter: it exists only when every named parent (a categorical or "
    "discrete parameter defined earlier) takes one of the listed values, e.g. "
    "{optimizer: [sgd]}. An inactive parameter is absent from the trial's parameters "
    "and TRIALFORGE_PARAMS, and ${params.NAME} of it is an empty string."
)


def same_value(a: Any, b: Any) -> bool:
    """Whether two parameter values are the same choice (1 and True are not; 1 and 1.0 are)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _when_field() -> Any:
    return Field(default=None, max_length=16, description=_WHEN_FIELD_DESCRIPTION)


def _when_lists(value: When | None) -> When | None:
    for parent, values in (value or {}).items():
        if not values:
            raise ValueError(f"{parent}: list at least one value the parent may take")
        if len(values) > 1000:
            raise ValueError(f"{parent}: at most 1000 values")
        _no_duplicates(values)
    return value


def _cel(rule: str, message: str, **extra: str) -> dict[str, str]:
    return {"rule": rule, "message": message, **extra}


def _immutable(what: str) -> dict[str, str]:
    return _cel("self == oldSelf", f"{what} cannot change once the experiment exists")


class FloatParameter(SpecModel):
    """A real-valued parameter in [min, max], optionally on a log scale or a step grid."""

    name: str = Field(pattern=PARAMETER_NAME, max_length=63)
    type: Literal["float"]
    when: When | None = _when_field()

    _when_ok = field_validator("when")(_when_lists)
    min: float = Field(ge=-MAX_FLOAT, le=MAX_FLOAT)
    max: float = Field(ge=-MAX_FLOAT, le=MAX_FLOAT)
    log: bool = False
    step: float | None = Field(default=None, gt=0, le=MAX_FLOAT)

    @field_validator("max")
    @classmethod
    def _max_above_min(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("min")
        if low is not None and value <= low:
            raise ValueError(f"max ({value:g}) must be greater than min ({low:g})")
        return value

    @field_validator("log")
    @classmethod
    def _log_needs_positive_min(cls, value: bool, info: ValidationInfo) -> bool:
        low = info.data.get("min")
        if value and low is not None and low <= 0:
            raise ValueError(f"a log scale needs min > 0, but min is {low:g}")
        return value

    @field_validator("step")
    @classmethod
    def _step_not_with_log(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("log"):
            raise ValueError("step cannot be combined with log: true")
        return value

    @property
    def bounded(self) -> bool:
        """Whether the parameter has finitely many values (a grid can enumerate it)."""
        return self.step is not None


class IntParameter(SpecModel):
    """An integer parameter in [min, max] (both included) with an optional step."""

    name: str = Field(pattern=PARAMETER_NAME, max_length=63)
    type: Literal["int"]
    when: When | None = _when_field()

    _when_ok = field_validator("when")(_when_lists)
    min: int = Field(ge=-MAX_INT, le=MAX_INT)
    max: int = Field(ge=-MAX_INT, le=MAX_INT)
    step: int = Field(default=1, ge=1, le=MAX_INT)
    log: bool = False

    @field_validator("max")
    @classmethod
    def _max_above_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min")
        if low is not None and value <= low:
            raise ValueError(f"max ({value}) must be greater than min ({low})")
        return value

    @field_validator("log")
    @classmethod
    def _log_rules(cls, value: bool, info: ValidationInfo) -> bool:
        low = info.data.get("min")
        if value and low is not None and low < 1:
            raise ValueError(f"a log scale needs min >= 1, but min is {low}")
        if value and info.data.get("step", 1) != 1:
            raise ValueError("step cannot be combined with log: true")
        return value

    @property
    def bounded(self) -> bool:
        return True


def _no_duplicates(values: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        # 1 == True in Python, but they are different choices to a user.
        key = (type(value).__name__, value)
        if key in seen:
            raise ValueError(f"value {value!r} is listed twice")
        seen.append(key)
    return values


def _in_range(value: int | float) -> int | float:
    limit = MAX_INT if isinstance(value, int) else MAX_FLOAT
    if abs(value) > limit:
        raise ValueError(f"{value!r} is too large; a value must be within -{limit} and {limit}")
    return value


class CategoricalParameter(SpecModel):
    """A choice among unordered values (strings, numbers or booleans)."""

    name: str = Field(pattern=PARAMETER_NAME, max_length=63)
    type: Literal["categorical"]
    when: When | None = _when_field()

    _when_ok = field_validator("when")(_when_lists)
    values: list[ParameterValue] = Field(min_length=1, max_length=1000)

    _unique = field_validator("values")(_no_duplicates)

    @property
    def bounded(self) -> bool:
        return True


class DiscreteParameter(SpecModel):
    """A choice among listed numbers (e.g. batch sizes 16, 32, 64)."""

    name: str = Field(pattern=PARAMETER_NAME, max_length=63)
    type: Literal["discrete"]
    when: When | None = _when_field()

    _when_ok = field_validator("when")(_when_lists)
    # The range is checked per item, so an error names the item; the schema cannot
    # say it: int | float items are any JSON value to it.
    values: list[Annotated[int | float, AfterValidator(_in_range)]] = Field(
        min_length=1, max_length=1000
    )

    _unique = field_validator("values")(_no_duplicates)

    @property
    def bounded(self) -> bool:
        return True


Parameter = Annotated[
    FloatParameter | IntParameter | CategoricalParameter | DiscreteParameter,
    Field(discriminator="type"),
]


class Objective(SpecModel):
    """One metric to optimise, and how a trial's series becomes its final value."""

    metric: str = Field(min_length=1, max_length=128)
    direction: Literal["maximize", "minimize"]
    goal: float | None = Field(
        default=None,
        description="Stop the experiment once a trial reaches this value.",
    )
    final: Literal["last", "best", "mean"] = Field(
        default="last",
        description="The trial's objective: its last reported value, its best one, "
        "or the mean of the last `window` values.",
    )
    window: int = Field(default=1, ge=1, le=1000)


class SearchSpec(SpecModel):
    algorithm: SearchAlgorithm = "tpe"
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    settings: dict[str, Any] | None = Field(
        default=None,
        description="Extra keyword arguments for the Optuna sampler, e.g. "
        "{nStartupTrials: 5} for tpe.",
    )


class EarlyStoppingSpec(SpecModel):
    algorithm: EarlyStoppingAlgorithm = "none"
    settings: dict[str, Any] | None = Field(
        default=None,
        description="Extra keyword arguments for the Optuna pruner, e.g. "
        "{minResource: 2, reductionFactor: 3} for asha.",
    )


class BudgetSpec(SpecModel):
    max_trials: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="How many configurations the search tries (each runs `repeats` times). "
        "Required unless spec.arms lists the configurations.",
    )
    parallelism: int = Field(default=1, ge=1, le=10_000)
    max_failed_trials: int | None = Field(
        default=None,
        ge=0,
        le=MAX_FAILED_TRIALS,
        description="The experiment fails once more trials than this have failed "
        "(after their retries). Unset: no limit.",
    )
    deadline: str | None = Field(
        default=None,
        pattern=DURATION_PATTERN,
        description="Wall-clock limit from the experiment's start, e.g. 6h.",
    )

    _deadline_positive = field_validator("deadline")(_positive_duration)

    @property
    def deadline_seconds(self) -> float | None:
        return None if self.deadline is None else parse_duration(self.deadline)


class MetricsSpec(SpecModel):
    """Where a trial's observations come from and how its lines are read."""

    source: Literal["stdout", "file", "push", "tensorboard"] = "stdout"
    format: Literal["json", "keyvalue", "regex"] = "json"
    pattern: str | None = Field(default=None, max_length=1024)
    path: str | None = Field(default=None, max_length=1024)

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if not compiled.groupindex:
            raise ValueError("the pattern needs named groups, e.g. (?P<val_loss>[-.0-9eE]+)")
        return value


class CheckpointSpec(SpecModel):
    """Where a trial's checkpoints live on a cluster (docs/checkpoints.md).

    The volume is one of the pod template's own (a PersistentVolumeClaim, NFS,
    ...): each trial gets its sub-path ``<experiment>/<experiment>-<index>``,
    mounted at ``mountPath`` in every container, and ``TRIALFORGE_CHECKPOINT_DIR``
    says where.  Every run and attempt of the trial sees the same directory.
    Unset: no checkpoints on a cluster (a trial disrupted starts again).
    """

    volume: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="The name of a volume in trial.template.spec.volumes that keeps "
        "checkpoints beyond a pod (a PersistentVolumeClaim, NFS, ...).",
    )
    mount_path: str = Field(
        default="/checkpoints",
        pattern=r"^/[^:]*$",
        max_length=1024,
        description="Where the trial's directory is mounted (TRIALFORGE_CHECKPOINT_DIR).",
    )


# spec.trial.maxDisruptions by default: generous (a preemptible fleet disrupts
# often), but a trial that is disrupted forever ends.
DEFAULT_MAX_DISRUPTIONS = 10


class TrialSpecTemplate(SpecModel):
    """How one trial runs: workers, retries, timeout, metrics and the pod template."""

    workers: int = Field(default=1, ge=1, le=1024)
    retries: int = Field(default=0, ge=0, le=100)
    max_disruptions: int = Field(
        default=DEFAULT_MAX_DISRUPTIONS,
        ge=0,
        le=1000,
        description="How many times a trial may be disrupted (preempted, evicted, its node "
        "lost) and run again before it fails with TooManyDisruptions. Disruptions never "
        "count against retries or budget.maxFailedTrials.",
    )
    timeout: str | None = Field(default=None, pattern=DURATION_PATTERN)
    checkpoint: CheckpointSpec | None = Field(
        default=None,
        description="A volume for checkpoints, so a trial that runs again (after a "
        "disruption, a pause) resumes. Unset: no checkpoints on a cluster.",
    )
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    template: dict[str, Any] = Field(
        description="A PodTemplateSpec for one worker of a trial. "
        "${params.NAME} in command, args and env values is replaced by the "
        "trial's value of parameter NAME."
    )

    _timeout_positive = field_validator("timeout")(_positive_duration)

    @property
    def timeout_seconds(self) -> float | None:
        return None if self.timeout is None else parse_duration(self.timeout)


class Baseline(SpecModel):
    """The configuration every candidate is compared against (e.g. what runs in production).

    A full parameter set: every parameter of spec.parameters, each value inside
    its parameter's space.  It runs ``spec.repeats`` times, as ``baseline``.
    """

    parameters: dict[str, ParameterValue]


ARM_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"


class Arm(SpecModel):
    """One configuration of a comparison experiment (A/B or A/B/n): no search, these only."""

    name: str = Field(pattern=ARM_NAME, max_length=63)
    parameters: dict[str, ParameterValue]


class ConfirmSpec(SpecModel):
    """After the search, run the best ``top`` configurations and the baseline again.

    The best of many noisy trials is biased upward (it won partly by luck);
    runs with fresh seeds measure it without that bias, and the comparison
    uses these runs only.
    """

    top: int = Field(default=1, ge=1, le=100)
    repeats: int = Field(
        default=5, ge=2, le=1000, description="Runs per configuration, each with a fresh seed."
    )


class ComparisonSpec(SpecModel):
    """How candidates are compared with the baseline (see trialforge.stats)."""

    test: Literal["welch", "mann-whitney", "auto"] = Field(
        default="welch",
        description="welch: Welch's t-test; mann-whitney: Mann-Whitney U; auto: "
        "Mann-Whitney U when an arm looks non-normal and the sizes allow it.",
    )
    alpha: float = Field(default=0.05, gt=0.0, le=0.5)


class Constraint(SpecModel):
    """A bound a trial's metric must keep for the trial to be feasible (e.g. latency_ms <= 20).

    The trial's value of the metric is its last reported one; a trial that
    violates a bound is infeasible: it stays in the search (the samplers that
    take Optuna's ``constraints_func`` learn from it), but it is never the best
    trial nor on the Pareto front.
    """

    metric: str = Field(min_length=1, max_length=128)
    max: float | None = Field(default=None, description="Feasible when the metric is <= max.")
    min: float | None = Field(default=None, description="Feasible when the metric is >= min.")

    @field_validator("min")
    @classmethod
    def _min_below_max(cls, value: float | None, info: ValidationInfo) -> float | None:
        high = info.data.get("max")
        if value is not None and high is not None and value > high:
            raise ValueError(f"min ({value:g}) is above max ({high:g}); no value is feasible")
        return value

    def violation(self, value: float) -> float:
        """How far ``value`` lies outside the bounds: > 0 infeasible, <= 0 feasible."""
        out = float("-inf")
        if self.max is not None:
            out = max(out, value - self.max)
        if self.min is not None:
            out = max(out, self.min - value)
        return out


class WarmStart(SpecModel):
    """An earlier experiment whose finished trials the sampler is told before it suggests."""

    experiment: str | None = Field(
        default=None,
        pattern=EXPERIMENT_NAME,
        max_length=MAX_EXPERIMENT_NAME,
        description="An Experiment in the same namespace (on a cluster).",
    )
    run_dir: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="The run directory of an earlier `trialforge run` (locally); relative to "
        "the experiment file's directory.",
    )


class ExperimentSpec(SpecModel):
    objective: Objective | None = None
    objectives: list[Objective] | None = Field(default=None, min_length=1, max_length=16)
    parameters: list[Parameter] = Field(min_length=1, max_length=64)
    search: SearchSpec = Field(default_factory=SearchSpec)
    early_stopping: EarlyStoppingSpec = Field(default_factory=EarlyStoppingSpec)
    budget: BudgetSpec
    trial: TrialSpecTemplate
    suspend: bool = Field(default=False, description="Start no new trials while true.")
    suspend_policy: Literal["Finish", "Pause"] = Field(
        default="Finish",
        description="What spec.suspend does to running trials: Finish lets them finish; "
        "Pause suspends their Jobs (the pods are deleted) and starts them again, from the "
        "beginning or the trainer's own checkpoint, when spec.suspend is false again; with a "
        "queue, Pause deactivates the Jobs' Kueue Workloads, and Kueue admits them again.",
    )
    queue: str | None = Field(
        default=None,
        max_length=MAX_QUEUE_NAME,
        pattern=QUEUE_NAME,
        description="A Kueue LocalQueue: trial Jobs are created suspended and wait for Kueue.",
    )
    code_version: str | None = Field(
        default=None, max_length=256, description="e.g. a git SHA; recorded on every Trial."
    )
    data_version: str | None = Field(
        default=None,
        max_length=256,
        description="e.g. a DVC, lakeFS or Delta version; recorded on every Trial.",
    )
    baseline: Baseline | None = None
    repeats: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Runs of every configuration, each with its own seed (TRIALFORGE_SEED).",
    )
    arms: list[Arm] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="A comparison experiment: run these configurations (and the baseline), "
        "no search. Without a baseline the first arm is the control.",
    )
    confirm: ConfirmSpec | None = None
    comparison: ComparisonSpec = Field(default_factory=ComparisonSpec)
    constraints: list[Constraint] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description="Bounds on metrics, e.g. [{metric: latency_ms, max: 20}]: a trial that "
        "violates one is infeasible, and the best trial and the Pareto front are chosen "
        "among feasible trials only.",
    )
    # Free-form maps to the schema (each value is checked against its parameter by
    # api.validation): the API server's CEL cannot type a list of maps of mixed
    # values, and the immutability rule needs it typed or free-form.
    initial_points: list[dict[str, Any]] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Configurations the search runs first, in order (Optuna's enqueue_trial); "
        "a parameter left out is sampled.",
    )
    warm_start: WarmStart | None = Field(
        default=None,
        description="Tell the sampler every finished trial of an earlier experiment before "
        "the first suggestion: {experiment: NAME} on a cluster, {runDir: PATH} locally.",
    )

    @property
    def all_objectives(self) -> list[Objective]:
        if self.objectives:
            return list(self.objectives)
        return [self.objective] if self.objective is not None else []

    @property
    def multi_objective(self) -> bool:
        return len(self.all_objectives) > 1

    @property
    def conditional(self) -> bool:
        """Whether some parameter exists only under a condition (``when``)."""
        return any(p.when for p in self.parameters)

    def active(self, values: Mapping[str, Any]) -> list[str]:
        """The parameters that exist for a configuration whose values are ``values``.

        A parameter is active when it has no ``when``, or when every parent is
        active and takes one of the values listed for it (parents come first,
        so one pass in order decides).
        """
        active: list[str] = []
        for p in self.parameters:
            if not p.when or all(
                parent in active
                and parent in values
                and any(same_value(values[parent], v) for v in allowed)
                for parent, allowed in p.when.items()
            ):
                active.append(p.name)
        return active

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)


class ObjectMeta(WireModel):
    """The metadata Trialforge reads; the server's other fields pass through."""

    model_config = WireModel.model_config | {"extra": "allow"}

    name: str = Field(pattern=EXPERIMENT_NAME, max_length=MAX_EXPERIMENT_NAME)
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None


class Experiment(WireModel):
    api_version: Literal["trialforge.io/v1alpha1"]
    kind: Literal["Experiment"]
    metadata: ObjectMeta
    spec: ExperimentSpec
    status: ExperimentStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name


# CEL rules the API server enforces; each mirrors a Python rule above or in
# validation.py, and tests/cluster checks the server says the same thing.
CEL_RULES: dict[str, list[dict[str, str]]] = {
    "ExperimentSpec": [
        _cel(
            "has(self.objective) != has(self.objectives)",
            "set exactly one of objective or objectives",
            fieldPath=".objective",
            reason="FieldValueInvalid",
        ),
        _cel(
            "!has(self.objectives) || size(self.objectives) < 2 || !has(self.search) || "
            "!has(self.search.algorithm) || "
            f"self.search.algorithm in {list(MULTI_OBJECTIVE_ALGORITHMS)}",
            "this search algorithm cannot optimise several objectives; "
            "use tpe, nsga2, random, grid, qmc or gp",
            fieldPath=".search.algorithm",
            reason="FieldValueInvalid",
        ),
        # The operator image cannot run these samplers (vocabulary.NEEDS_OPTIONAL_PACKAGE).
        *(
            _cel(
                f"!has(self.search) || !has(self.search.algorithm) || "
                f"self.search.algorithm != '{algorithm}'",
                missing_package_reason(algorithm, on_cluster=True),
                fieldPath=".search.algorithm",
                reason="FieldValueForbidden",
            )
            for algorithm in NEEDS_OPTIONAL_PACKAGE
        ),
        _cel(
            "!has(self.objectives) || size(self.objectives) < 2 || !has(self.earlyStopping) "
            "|| !has(self.earlyStopping.algorithm) || self.earlyStopping.algorithm == 'none'",
            "early stopping needs a single objective",
            fieldPath=".earlyStopping.algorithm",
            reason="FieldValueInvalid",
        ),
        _cel(
            "!has(self.search) || !has(self.search.algorithm) || "
            "self.search.algorithm != 'grid' || self.parameters.all(p, "
            "p.type != 'float' || has(p.step))",
            "grid search needs every float parameter to have a step",
            fieldPath=".search.algorithm",
            reason="FieldValueInvalid",
        ),
        _cel(
            "has(self.arms) || has(self.budget.maxTrials)",
            "budget.maxTrials is required (unless spec.arms lists the configurations)",
            fieldPath=".budget.maxTrials",
            reason="FieldValueRequired",
        ),
        _cel(
            "!has(self.arms) || !has(self.budget.maxTrials)",
            "an arms experiment runs every arm `repeats` times; remove budget.maxTrials",
            fieldPath=".budget.maxTrials",
            reason="FieldValueForbidden",
        ),
        _cel(
            "!has(self.budget.parallelism) || !has(self.budget.maxTrials) || "
            "self.budget.parallelism <= self.budget.maxTrials * "
            "(has(self.repeats) ? self.repeats : 1)",
            "parallelism cannot be more than maxTrials x repeats",
            fieldPath=".budget.parallelism",
            reason="FieldValueInvalid",
        ),
        _cel(
            "!has(self.arms) || !has(self.search) || !has(self.search.algorithm)",
            "arms list the configurations to compare, there is nothing to search: "
            "remove search.algorithm (search.seed still seeds the repeats)",
            fieldPath=".search.algorithm",
            reason="FieldValueForbidden",
        ),
        _cel(
            "!has(self.arms) || !has(self.confirm)",
            "confirm re-runs the best configurations of a search; an arms experiment has none",
            fieldPath=".confirm",
            reason="FieldValueForbidden",
        ),
        _cel(
            "!has(self.arms) || !has(self.earlyStopping) || "
            "!has(self.earlyStopping.algorithm) || self.earlyStopping.algorithm == 'none'",
            "early stopping would cut arms short and bias their comparison",
            fieldPath=".earlyStopping.algorithm",
            reason="FieldValueForbidden",
        ),
    ],
    "Parameter": [
        _cel(
            "!(self.type in ['float', 'int']) || (has(self.min) && has(self.max) && "
            "self.min < self.max)",
            "float and int parameters need min and max, with max greater than min",
            fieldPath=".max",
            reason="FieldValueInvalid",
        ),
        _cel(
            "!has(self.log) || !self.log || !has(self.min) || self.min > 0.0",
            "a log scale needs min > 0",
            fieldPath=".min",
            reason="FieldValueInvalid",
        ),
        # An int's range is narrower than the merged schema's (a float's).
        *(
            _cel(
                f"self.type != 'int' || !has(self.{field}) || "
                f"(self.{field} >= {-MAX_INT}.0 && self.{field} <= {MAX_INT}.0)",
                f"an int parameter's {field} must be within -{MAX_INT} and {MAX_INT}",
                fieldPath=f".{field}",
                reason="FieldValueInvalid",
            )
            for field in ("min", "max", "step")
        ),
        # No CEL for `values`: its items may be strings, numbers or booleans, a
        # type CEL cannot see into; validate/operator check it instead.
    ],
    "Constraint": [
        _cel(
            "has(self.max) || has(self.min)",
            "a constraint needs max, min or both",
            fieldPath=".max",
            reason="FieldValueRequired",
        ),
        _cel(
            "!has(self.max) || !has(self.min) || self.min <= self.max",
            "min is above max; no value is feasible",
            fieldPath=".min",
            reason="FieldValueInvalid",
        ),
    ],
    "WarmStart": [
        _cel(
            "has(self.experiment) != has(self.runDir)",
            "set exactly one of experiment (on a cluster) or runDir (locally)",
            fieldPath=".experiment",
            reason="FieldValueInvalid",
        ),
    ],
    # A duration with a non-zero digit is more than zero (the units are letters).
    "BudgetSpec": [
        _cel(
            "!has(self.deadline) || self.deadline.matches('[1-9]')",
            "deadline must be more than zero",
            fieldPath=".deadline",
            reason="FieldValueInvalid",
        ),
    ],
    "TrialSpecTemplate": [
        _cel(
            "!has(self.timeout) || self.timeout.matches('[1-9]')",
            "timeout must be more than zero",
            fieldPath=".timeout",
            reason="FieldValueInvalid",
        ),
    ],
    "MetricsSpec": [
        _cel(
            "!has(self.format) || self.format != 'regex' || has(self.pattern)",
            "format regex needs a pattern",
            fieldPath=".pattern",
            reason="FieldValueRequired",
        ),
        _cel(
            "!has(self.source) || !(self.source in ['file', 'tensorboard']) || has(self.path)",
            "sources file and tensorboard need a path",
            fieldPath=".path",
            reason="FieldValueRequired",
        ),
    ],
}

# Fields that define what the experiment is; changing them mid-run would make
# the trials already run incomparable with the rest.  Budget, suspend and the
# pod template (for new trials) may change.
IMMUTABLE_FIELDS: dict[str, list[str]] = {
    "ExperimentSpec": [
        "objective",
        "objectives",
        "parameters",
        "search",
        "baseline",
        "repeats",
        "arms",
        "constraints",
        "initial_points",
        "warm_start",
    ],
}
