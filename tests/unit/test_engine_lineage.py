"""The cluster adapter's side of issue 8, on Trial/Job/pod objects as the API returns them.

What the cluster decides is tested against the real control plane in
tests/cluster; these check the pure translations: a Trial's lineage from its
pod, the Trial spec the reconcile writes, a Trial read back as a record, and
the Job ``reproduce`` prints.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.unit.test_jobs import job_with, pod_with, running_trial, trial, xp
from trialforge.engine.lineage import artifact_uri, trial_spec_fields
from trialforge.engine.planner import StartTrial
from trialforge.kube.observe import trial_status_from, trial_view
from trialforge.reporting.reproduce import cluster_job, reproduction
from trialforge.reporting.rundata import RunData, record_from_trial


def test_artifact_uri_is_the_last_reported_json_line() -> None:
    lines = [
        "epoch 1",
        '{"step": 1, "loss": 0.5}',
        '{"artifact_uri": "s3://bucket/a"}',
        'INFO saved {"artifact_uri": "s3://bucket/b"}',
        '{"artifact_uri": 3}',
    ]
    assert artifact_uri(lines) == "s3://bucket/b"
    assert artifact_uri(["no artifact here"]) is None


def test_a_finished_pod_gives_the_artifact_and_the_gpu_model() -> None:
    spec = xp().spec
    pod = pod_with("Succeeded", 0)
    pod["spec"]["nodeSelector"] = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    term["message"] = '{"artifact_uri": "s3://models/mnist-3/model.pt"}\n'
    observed = trial_status_from(
        spec, running_trial([(1, 0.5)]), job_with({"type": "Complete"}), [pod]
    )
    s = observed.status
    assert s["artifactUri"] == "s3://models/mnist-3/model.pt"
    assert s["gpuType"] == "NVIDIA-H100-80GB-HBM3"
    assert s["node"] == "gpu-1" and s["imageDigest"] == "reg/img@sha256:abc"


def test_the_trial_spec_records_its_design_and_versions_and_is_read_back() -> None:
    spec = xp(codeVersion="git:3f2a", dataVersion="dvc:9").spec
    action = StartTrial(7, 0, {"lr": 0.01, "opt": "adam"}, 99, {}, "new", "confirm", "c3", 2, 3)
    fields = trial_spec_fields(spec, action)
    assert fields == {
        "role": "confirm", "config": "c3", "repeat": 2, "searchIndex": 3,
        "codeVersion": "git:3f2a", "dataVersion": "dvc:9",
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


def _run_data(t: dict[str, Any]) -> RunData:
    experiment = xp()
    record = record_from_trial(t)
    return RunData("mnist", experiment, {}, [record], "cluster ml/mnist", namespace="ml")


def test_a_cluster_trial_becomes_a_record_with_its_lineage() -> None:
    t = trial()
    t["spec"].update(role="arm", config="b", repeat=1, codeVersion="abc")
    t["status"] = {
        "phase": "Succeeded", "values": [0.3], "startTime": "2026-01-01T10:00:00Z",
        "completionTime": "2026-01-01T10:00:30Z", "node": "gpu-1", "gpuType": "H100",
        "artifactUri": "s3://m",
    }  # fmt: skip
    r = record_from_trial(t)
    assert (r.name, r.index, r.seed, r.role, r.config, r.repeat) == ("mnist-3", 3, 1234, "arm",
                                                                     "b", 1)  # fmt: skip
    assert r.completion_time - r.start_time == 30  # type: ignore[operator]
    assert (r.node, r.gpu_type, r.artifact_uri, r.code_version) == ("gpu-1", "H100", "s3://m",
                                                                    "abc")  # fmt: skip


def test_reproduce_builds_a_standalone_job_with_the_same_seed_and_command() -> None:
    t = trial()
    data = _run_data(t)
    job = cluster_job(data, copy.deepcopy(t))
    assert job["kind"] == "Job" and job["metadata"]["name"] == "mnist-3-repro"
    assert "ownerReferences" not in job["metadata"]
    # Not labelled as the experiment's: the operator leaves it alone.
    assert job["metadata"]["labels"] == {"trialforge.io/reproduces": "mnist-3"}
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TRIALFORGE_SEED"] == "1234"
    assert env["TRIALFORGE_PARAMS"] == '{"lr": 0.01, "opt": "adam"}'
    assert container["command"] == ["python", "train.py", "--lr=0.01"]
    assert container["args"] == ["--opt=adam"]
    assert "TRIALFORGE_INGEST_URL" not in env
    line = reproduction(data, data.records[0]).shell()
    assert "TRIALFORGE_SEED=1234" in line and "python train.py --lr=0.01 --opt=adam" in line
