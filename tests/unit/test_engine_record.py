"""engine.record: the one trial record and its conversions."""

from __future__ import annotations

import dataclasses

import pytest

from tests.factories import experiment_doc
from tests.unit.test_kube_jobs import trial, xp
from trialforge.api import load_experiment
from trialforge.api.trial import Trial
from trialforge.engine.objective import Outcome
from trialforge.engine.planner import StartTrial, StopTrial
from trialforge.engine.record import (
    STATUS_FIELDS,
    TrialRecord,
    latest_attempts,
    rfc3339,
    timestamp,
    trial_spec,
)
from trialforge.engine.status import outcome_status, stop_status
from trialforge.kube.observe import trial_view


def resource(record: TrialRecord, status: dict | None = None) -> dict:
    return {
        "apiVersion": "trialforge.io/v1alpha1",
        "kind": "Trial",
        "metadata": {"name": record.name, "namespace": "ml"},
        "spec": trial_spec("xp", record),
        "status": status or {},
    }


def started() -> TrialRecord:
    spec = load_experiment(experiment_doc(codeVersion="git:1", dataVersion="d:2")).spec
    action = StartTrial(4, 1, {"x": 0.5}, 77, {"trial": {"n": 4}}, "retry", "search", "c4", 0, 4)
    return TrialRecord.start("xp", spec, action)


def test_a_started_record_names_its_trial_and_says_why_it_runs() -> None:
    record = started()
    assert (record.name, record.phase, record.reason) == ("xp-4-r1", "Pending", "Retry")
    assert (record.role, record.config, record.search_index) == ("search", "c4", 4)
    assert (record.code_version, record.data_version) == ("git:1", "d:2")


def test_a_record_goes_to_a_trial_resource_and_comes_back_the_same() -> None:
    record = started()
    trial = resource(record)
    Trial.model_validate(trial)  # the spec is what the CRD's model accepts
    # All but the reason, which is status (a new Trial has none until it is observed).
    assert TrialRecord.from_resource(trial) == dataclasses.replace(record, reason=None)
    assert TrialRecord.from_resource({**trial, "status": {"reason": "Retry"}}) == record


def test_every_status_field_the_record_reads_is_a_trial_status_field() -> None:
    from trialforge.api.status import TrialStatus

    wire = {f.alias or name for name, f in TrialStatus.model_fields.items()}
    assert set(STATUS_FIELDS) <= wire
    assert set(STATUS_FIELDS.values()) <= {f.name for f in dataclasses.fields(TrialRecord)}


def test_status_fields_read_from_a_resource_and_applied_to_a_record_agree() -> None:
    """Both runtimes apply an outcome through the same mapping (engine.status)."""
    record = started()
    status = {
        **outcome_status(Outcome("Succeeded", "Completed", "trial completed", (0.25,))),
        "startTime": "2026-01-01T10:00:00Z",
        "completionTime": "2026-01-01T10:00:30Z",
        "node": "gpu-1",
        "exitCode": 0,
        "history": {"loss": [{"step": 1, "value": 0.5}, {"step": 2, "value": None,
                                                        "nonFinite": "nan"}]},
    }  # fmt: skip
    cluster = TrialRecord.from_resource(resource(record, status), metric="loss")
    local = record.with_status(status)
    assert cluster.values == local.values == (0.25,)
    assert cluster.completion_time - cluster.start_time == 30  # type: ignore[operator]
    assert dataclasses.replace(cluster, intermediate={}) == local
    assert cluster.intermediate[1] == 0.5 and cluster.intermediate[2] != cluster.intermediate[2]


def test_a_stop_that_cannot_help_again_is_not_retryable() -> None:
    stop = StopTrial("xp-4-r1", "Failed", "ObjectiveNotFinite", "diverged", retryable=False)
    record = started().with_status(stop_status(stop, 1_700_000_000.0))
    assert (record.phase, record.retryable) == ("Failed", False)
    assert record.completion_time == 1_700_000_000.0


def test_times_read_from_numbers_and_rfc3339_alike() -> None:
    assert timestamp("2026-01-01T00:00:00Z") == timestamp(1767225600) == 1767225600.0
    assert rfc3339(1767225600.4) == "2026-01-01T00:00:00Z"
    assert timestamp(None) is None and rfc3339(None) is None
    with pytest.raises(ValueError):
        timestamp("yesterday")


def test_latest_attempts_takes_each_index_highest_attempt() -> None:
    a = TrialRecord("xp-0", 0, 0, "Failed", {})
    b = TrialRecord("xp-0-r1", 0, 1, "Succeeded", {})
    c = TrialRecord("xp-1", 1, 0, "Running", {})
    assert latest_attempts([b, a, c]) == {0: b, 1: c}


def test_the_trial_spec_records_its_design_and_versions_and_is_read_back() -> None:
    spec = xp(codeVersion="git:3f2a", dataVersion="dvc:9").spec
    action = StartTrial(7, 0, {"lr": 0.01, "opt": "adam"}, 99, {}, "new", "confirm", "c3", 2, 3)
    fields = trial_spec("mnist", TrialRecord.start("mnist", spec, action))
    assert fields == {
        "experiment": "mnist", "index": 7, "attempt": 0, "parameters": {"lr": 0.01, "opt": "adam"},
        "seed": 99, "searchState": {}, "role": "confirm", "config": "c3", "repeat": 2,
        "searchIndex": 3, "codeVersion": "git:3f2a", "dataVersion": "dvc:9",
    }  # fmt: skip
    t = trial("mnist-7", 7)
    t["spec"].update(fields)
    t["status"] = {"phase": "Succeeded", "values": [0.2], "artifactUri": "s3://m"}
    view = trial_view(spec, t)
    assert (view.role, view.config, view.repeat, view.search_index) == ("confirm", "c3", 2, 3)
    assert view.artifact_uri == "s3://m"
    # A trial written before roles existed is a search trial of its own index.
    old = trial("mnist-4", 4)
    view = trial_view(spec, old)
    assert view.role is None and view.repeat == 0 and view.search_index is None
