"""Status models: what Trialforge writes back about experiments and trials."""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import Field

from trialforge.api.base import WireModel


class TrialPhase(enum.StrEnum):
    """A trial's phase; each member is the string the Trial's status holds."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    PRUNED = "Pruned"
    CANCELLED = "Cancelled"


class ExperimentPhase(enum.StrEnum):
    """An experiment's phase; each member is the string the Experiment's status holds."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


# The models' fields are Literals of the enums' values, not the enums: pydantic
# then keeps producing plain strings (model_dump, which yaml.safe_dump can
# write), its errors stay the literal errors api.validation words, and the CRD
# schemas stay as they are.  tests/unit/test_api_status.py holds them equal.
TrialPhaseName = Literal["Pending", "Running", "Succeeded", "Failed", "Pruned", "Cancelled"]
ExperimentPhaseName = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed"]

# Members compare and hash as their strings, so a phase read from a resource
# (a plain str) is found in these sets too.
TERMINAL_PHASES: frozenset[TrialPhase] = frozenset(
    {TrialPhase.SUCCEEDED, TrialPhase.FAILED, TrialPhase.PRUNED, TrialPhase.CANCELLED}
)
ACTIVE_PHASES: frozenset[TrialPhase] = frozenset({TrialPhase.PENDING, TrialPhase.RUNNING})

# History kept per metric in a Trial's status: enough to plot, bounded so a
# long training cannot push the object past etcd's size limit.
MAX_HISTORY_POINTS = 100
# Output lines kept in a Trial's status when it ends (kube.logtail bounds them).
MAX_LOG_TAIL_LINES = 50
# Metrics a Trial's status keeps (summaries and histories) besides its objectives:
# the first others a trainer reported.  With MAX_HISTORY_POINTS this bounds a
# Trial's status (docs/scaling.md) however many metrics or steps a trainer reports.
MAX_TRIAL_METRICS = 32
# Members of the Pareto front an Experiment's status lists (paretoFrontSize
# counts them all): the front of a long multi-objective search can hold most of
# its trials, and the status must stay far below etcd's 1.5 MiB at any count.
MAX_PARETO_FRONT = 50


class MetricSummary(WireModel):
    latest: float | None = None
    best: float | None = None
    step: int | None = Field(default=None, description="Step of the latest value.")
    count: int = 0


class HistoryPoint(WireModel):
    step: int
    value: float | None = Field(default=None, description="Null when not finite; see nonFinite.")
    non_finite: str | None = Field(default=None, description="nan, inf or -inf (JSON has none).")
    time: float | None = None


class Condition(WireModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class DisruptionRecord(WireModel):
    """One run of a trial that a disruption ended (engine.disruption)."""

    reason: str = Field(description="Preempted, Evicted, Drained, NodeLost or Interrupted.")
    message: str = ""
    time: str | None = None
    run: str | None = Field(default=None, description="The run it ended: a pod's name.")
    node: str | None = None


class TrialStatus(WireModel):
    phase: TrialPhaseName = "Pending"
    reason: str | None = None
    message: str | None = None
    objective: float | None = Field(default=None, description="The first objective's value.")
    values: list[float] | None = Field(default=None, description="Every objective, in order.")
    constraints: dict[str, float] | None = Field(
        default=None, description="The last value of each metric spec.constraints bounds."
    )
    feasible: bool | None = Field(
        default=None, description="Whether the trial kept every bound of spec.constraints."
    )
    metrics: dict[str, MetricSummary] | None = None
    history: dict[str, list[HistoryPoint]] | None = None
    start_time: str | None = None
    completion_time: str | None = None
    node: str | None = None
    gpu_type: str | None = None
    image_digest: str | None = None
    exit_code: int | None = None
    artifact_uri: str | None = Field(
        default=None,
        description="What the trainer reported as its artifact (trialforge.log_artifact).",
    )
    gpu_seconds: float | None = None
    retryable: bool | None = Field(
        default=None, description="False when running it again cannot help (a NaN objective)."
    )
    last_sequence: int | None = Field(
        default=None, description="The last observation sequence number stored."
    )
    log_tail: list[str] | None = Field(
        default=None,
        max_length=MAX_LOG_TAIL_LINES,
        description="The trainer's last output lines, kept when the trial ended "
        "(trialforge logs reads them once its pod is gone).",
    )
    disruptions: int | None = Field(
        default=None,
        ge=0,
        description="How many runs of this trial a disruption ended (preemption, eviction, "
        "a drain, a lost node); each ran again, none counts as a failure or a retry.",
    )
    disruption_history: list[DisruptionRecord] | None = Field(
        default=None, description="The latest disruptions, oldest first (bounded)."
    )
    checkpoint_step: int | None = Field(
        default=None,
        description="The last step the trainer saved a checkpoint of "
        "(trialforge.report(..., checkpoint=True)); a run after a disruption resumes there.",
    )
    observed_generation: int | None = None


class BestTrial(WireModel):
    trial: str = Field(description="The first successful run of the best configuration.")
    parameters: dict[str, Any]
    value: float | None = Field(default=None, description="The objective (single-objective).")
    values: list[float] | None = Field(default=None, description="Every objective, in order.")
    config: str | None = Field(default=None, description="The configuration (c<k>, an arm).")
    runs: int | None = Field(
        default=None,
        ge=1,
        description="Runs of the configuration that succeeded; values are means.",
    )
    artifact_uri: str | None = None


class TrialCounts(WireModel):
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    pruned: int = 0
    cancelled: int = 0
    retried: int = 0
    infeasible: int = Field(
        default=0, description="Trials that succeeded but violated spec.constraints."
    )
    disruptions: int = Field(default=0, description="Runs ended by disruptions, in all trials.")
    total: int = 0


class ExperimentStatus(WireModel):
    phase: ExperimentPhaseName = "Pending"
    reason: str | None = None
    message: str | None = None
    trials: TrialCounts = Field(default_factory=TrialCounts)
    best: BestTrial | None = None
    best_value: float | None = Field(default=None, description="Copy of best.value for kubectl.")
    progress: str | None = Field(
        default=None,
        max_length=32,
        description="Trials ended / trials the design plans at most (retries not counted), "
        "e.g. 12/40: the Progress column of kubectl get xp.",
    )
    pareto_front: list[BestTrial] | None = Field(
        default=None,
        description="The Pareto front, at most 50 members spread along it (paretoFrontSize "
        "counts them all).",
    )
    pareto_front_size: int | None = Field(
        default=None, description="Members of the whole Pareto front."
    )
    conditions: list[Condition] | None = None
    observed_generation: int | None = None
    start_time: str | None = None
    completion_time: str | None = None
    gpu_seconds: float | None = None
    comparison: list[dict[str, Any]] | None = Field(
        default=None, description="Verdicts of candidates against the baseline."
    )
