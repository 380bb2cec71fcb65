"""engine/lineage.py: a trial's lineage, on Trial/pod objects as the API returns them.

What the cluster decides is tested against the real control plane in
tests/cluster; these check the pure translations: the artifact a trainer
reports, and the Trial spec the reconcile writes, read back as a view.
"""

from __future__ import annotations

from tests.unit.test_jobs import trial, xp
from trialforge.engine.lineage import artifact_uri, trial_spec_fields
from trialforge.engine.planner import StartTrial
from trialforge.kube.observe import trial_view


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
