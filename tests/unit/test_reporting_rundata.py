"""reporting/rundata.py: a cluster Trial read as a record with its lineage."""

from __future__ import annotations

from tests.unit.test_kube_jobs import trial
from trialforge.engine.record import TrialRecord


def test_a_cluster_trial_becomes_a_record_with_its_lineage() -> None:
    t = trial()
    t["spec"].update(role="arm", config="b", repeat=1, codeVersion="abc")
    t["status"] = {
        "phase": "Succeeded", "values": [0.3], "startTime": "2026-01-01T10:00:00Z",
        "completionTime": "2026-01-01T10:00:30Z", "node": "gpu-1", "gpuType": "H100",
        "artifactUri": "s3://m",
    }  # fmt: skip
    r = TrialRecord.from_resource(t)
    assert (r.name, r.index, r.seed, r.role, r.config, r.repeat) == ("mnist-3", 3, 1234, "arm",
                                                                     "b", 1)  # fmt: skip
    assert r.completion_time - r.start_time == 30  # type: ignore[operator]
    assert (r.node, r.gpu_type, r.artifact_uri, r.code_version) == ("gpu-1", "H100", "s3://m",
                                                                    "abc")  # fmt: skip
