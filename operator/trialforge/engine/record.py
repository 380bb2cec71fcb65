"""The trial record: one attempt of one trial, the one shape every part of Trialforge reads.

The planner plans over records, the local runtime keeps them in its journal,
the Kubernetes runtime reads them from Trial resources, and reporting reads
them from either.  A record is immutable: a change is a new record
(:func:`dataclasses.replace`), so a record handed to the planner or to the
journal's writer never changes under it.

The conversions to and from the two places records live are here, written
once: :meth:`TrialRecord.from_resource` / :func:`trial_spec` for a Trial
resource (camelCase, times as RFC 3339 strings), :meth:`TrialRecord.from_journal`
/ :meth:`TrialRecord.to_journal` for the local journal (camelCase too, times as
seconds since the epoch; docs/run-directory.md; a journal of format 1 was
snake_case and is still read).  :data:`STATUS_FIELDS` maps a Trial's status fields
to the record's, so an outcome written as a status (engine.status) applies to
a record the same way.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trialforge.api.trial import trial_name
from trialforge.engine.history import by_step

if TYPE_CHECKING:
    from trialforge.api.experiment import ExperimentSpec
    from trialforge.engine.planner import StartTrial


def timestamp(value: Any) -> float | None:
    """Seconds since the epoch from a Trial's RFC 3339 time, a datetime or a number."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def rfc3339(seconds: float | None) -> str | None:
    """A time as Kubernetes writes it (whole seconds, UTC)."""
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class TrialRecord:
    """One trial attempt: what it runs, what became of it, and what reproduces it."""

    name: str
    index: int
    attempt: int
    phase: str
    parameters: Mapping[str, Any]
    seed: int = 0
    reason: str | None = None
    message: str | None = None
    values: tuple[float, ...] | None = None  # every objective, in order, once it succeeded
    retryable: bool = True  # False when running it again cannot help (a NaN objective)
    # spec.constraints' metrics at the trial's end, and whether it kept every bound.
    constraints: Mapping[str, float] | None = None
    feasible: bool | None = None
    # The first objective by step, as the planner and its pruner hear it: the
    # trial's bounded history (engine.history), which both runtimes keep alike
    # (the ingest merges each batch of observations into it, the local runtime
    # each round's); it holds every point while there are at most
    # MAX_HISTORY_POINTS, then the first, the best, the latest and evenly spaced ones.
    intermediate: Mapping[int, float] = field(default_factory=dict)
    search_state: Mapping[str, Any] | None = None
    # What the run is for (engine.planner.Slot); None for trials recorded
    # before roles existed, which are search trials with search index == index.
    role: str | None = None
    config: str | None = None
    repeat: int = 0
    search_index: int | None = None
    warm_start: str | None = None  # the warm start's source the sampler was told (engine.warm)
    # Lineage: what reproduces it and where it ran.
    code_version: str | None = None
    data_version: str | None = None
    command: tuple[str, ...] | None = None
    node: str | None = None
    gpu_type: str | None = None
    image_digest: str | None = None
    artifact_uri: str | None = None
    # How it ran.
    start_time: float | None = None
    completion_time: float | None = None
    exit_code: int | None = None
    gpu_seconds: float | None = None
    # Runs that a disruption ended (engine.disruption): counted apart, never a failure.
    disruptions: int = 0
    disruption_history: tuple[Mapping[str, Any], ...] = ()
    checkpoint_step: int | None = None
    junk_lines: int = 0  # output lines that were not observations (local)

    def disruption_status(self) -> dict[str, Any]:
        """The Trial status fields engine.disruption reads, from this record."""
        return {
            "disruptions": self.disruptions,
            "disruptionHistory": [dict(d) for d in self.disruption_history],
            "gpuSeconds": self.gpu_seconds,
        }

    def with_status(self, status: Mapping[str, Any]) -> TrialRecord:
        """This record with Trial status fields (wire names, as engine.status writes them)."""
        changes = _from_status(status)
        return dataclasses.replace(self, **changes) if changes else self

    # -- the local journal ------------------------------------------------------------

    def to_journal(self) -> dict[str, Any]:
        """The record as a journal line holds it (JSON-ready, camelCase keys; no
        intermediate values: the line at an attempt's end holds its observations)."""
        out = {f: getattr(self, f) for f in _JOURNALED}
        for key in ("parameters", "search_state", "constraints"):
            if out[key] is not None:
                out[key] = dict(out[key])
        for key in ("values", "command"):
            if out[key] is not None:
                out[key] = list(out[key])
        out["disruption_history"] = [dict(d) for d in self.disruption_history]
        return {JOURNAL_KEYS[k]: v for k, v in out.items()}

    @classmethod
    def from_journal(cls, data: Mapping[str, Any]) -> TrialRecord:
        """A record from a journal line (or a record file of the layout before the
        journal): camelCase keys, or the snake_case ones of format 1."""
        fields = {}
        for key, value in data.items():
            attr = _JOURNAL_ATTRS.get(key)
            if attr is not None:
                fields[attr] = value
        for key in ("values", "command"):
            if fields.get(key) is not None:
                fields[key] = tuple(fields[key])
        fields["parameters"] = dict(fields["parameters"])
        fields["index"] = int(fields["index"])
        fields["attempt"] = int(fields["attempt"])
        fields["repeat"] = int(fields.get("repeat") or 0)
        fields["disruptions"] = int(fields.get("disruptions") or 0)
        fields["disruption_history"] = tuple(fields.get("disruption_history") or ())
        fields.setdefault("phase", "Pending")
        return cls(**fields)

    # -- the Trial resource -----------------------------------------------------------

    @classmethod
    def from_resource(cls, trial: Mapping[str, Any], metric: str | None = None) -> TrialRecord:
        """A Trial resource (a dict as the API server returns it) as a record.

        ``metric`` names the objective whose stored history becomes the
        record's intermediate values (the planner's first objective).
        """
        spec = trial.get("spec") or {}
        status = trial.get("status") or {}
        history = ((status.get("history") or {}).get(metric) or []) if metric else []
        return cls(
            name=trial["metadata"]["name"],
            index=int(spec.get("index", 0)),
            attempt=int(spec.get("attempt", 0)),
            parameters=spec.get("parameters") or {},
            seed=int(spec.get("seed", 0)),
            intermediate=by_step(history),
            search_state=spec.get("searchState"),
            role=spec.get("role"),
            config=spec.get("config"),
            repeat=int(spec.get("repeat") or 0),
            search_index=spec.get("searchIndex"),
            warm_start=spec.get("warmStart"),
            code_version=spec.get("codeVersion"),
            data_version=spec.get("dataVersion"),
            **{"phase": "Pending", **_from_status(status)},
        )

    @classmethod
    def start(cls, experiment: str, spec: ExperimentSpec, action: StartTrial) -> TrialRecord:
        """The record of a trial the planner starts (``action``), before it runs."""
        return cls(
            name=trial_name(experiment, action.index, action.attempt),
            index=action.index,
            attempt=action.attempt,
            phase="Pending",
            parameters=action.parameters,
            seed=action.seed,
            reason="Retry" if action.why == "retry" else None,
            search_state=action.search_state,
            role=action.role,
            config=action.config,
            repeat=action.repeat,
            search_index=action.search_index,
            warm_start=action.warm_start,
            code_version=spec.code_version,
            data_version=spec.data_version,
        )


# A Trial's status field -> the record's attribute (both runtimes' one mapping).
STATUS_FIELDS: dict[str, str] = {
    "phase": "phase",
    "reason": "reason",
    "message": "message",
    "values": "values",
    "retryable": "retryable",
    "constraints": "constraints",
    "feasible": "feasible",
    "startTime": "start_time",
    "completionTime": "completion_time",
    "exitCode": "exit_code",
    "node": "node",
    "gpuType": "gpu_type",
    "imageDigest": "image_digest",
    "artifactUri": "artifact_uri",
    "gpuSeconds": "gpu_seconds",
    "disruptions": "disruptions",
    "disruptionHistory": "disruption_history",
    "checkpointStep": "checkpoint_step",
}
_TIMES = frozenset({"start_time", "completion_time"})


def _from_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """The record's attributes that Trial status fields give (only those present)."""
    out: dict[str, Any] = {}
    for key, value in status.items():
        attr = STATUS_FIELDS.get(key)
        if attr is None:
            continue
        if attr in _TIMES:
            value = timestamp(value)
        elif attr == "values" and value is not None:
            value = tuple(value)
        elif attr == "retryable":
            value = value is not False
        elif attr == "disruptions":
            value = int(value or 0)
        elif attr == "disruption_history":
            value = tuple(value or ())
        out[attr] = value
    return out


_JOURNALED = tuple(f.name for f in dataclasses.fields(TrialRecord) if f.name != "intermediate")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


# A record's attribute -> its key in a journal line (camelCase, as the
# resources and state.json spell theirs).
JOURNAL_KEYS: dict[str, str] = {f: _camel(f) for f in _JOURNALED}
# Either spelling of a key -> the attribute (format 1 wrote snake_case).
_JOURNAL_ATTRS: dict[str, str] = {
    **{f: f for f in _JOURNALED},
    **{key: f for f, key in JOURNAL_KEYS.items()},
}


def trial_spec(experiment: str, record: TrialRecord) -> dict[str, Any]:
    """A Trial resource's spec for ``record`` (wire names; what reproduces it)."""
    fields = {
        "experiment": experiment,
        "index": record.index,
        "attempt": record.attempt,
        "parameters": dict(record.parameters),
        "seed": record.seed,
        "searchState": dict(record.search_state) if record.search_state is not None else None,
        "role": record.role,
        "config": record.config,
        "repeat": record.repeat,
        "searchIndex": record.search_index,
        "warmStart": record.warm_start,
        "codeVersion": record.code_version,
        "dataVersion": record.data_version,
    }
    return {k: v for k, v in fields.items() if v is not None}


def latest_attempts(records: Sequence[TrialRecord]) -> dict[int, TrialRecord]:
    """Each trial index's latest attempt."""
    latest: dict[int, TrialRecord] = {}
    for record in records:
        current = latest.get(record.index)
        if current is None or record.attempt > current.attempt:
            latest[record.index] = record
    return latest
