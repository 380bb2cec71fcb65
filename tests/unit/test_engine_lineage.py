"""engine/lineage.py: a trial's lineage, on Trial/pod objects as the API returns them.

What the cluster decides is tested against the real control plane in
tests/cluster; this checks the pure translation of the artifact a trainer
reports (the Trial spec and its reading back: test_engine_record.py).
"""

from __future__ import annotations

from trialforge.engine.lineage import artifact_uri


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
