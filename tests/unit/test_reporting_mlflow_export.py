"""reporting/mlflow_export.py: a run exported to a real MLflow tracking store."""

from __future__ import annotations

from pathlib import Path

import pytest

from trialforge.cli import main
from trialforge.local.rundir import RunDirectory


def test_export_to_a_real_mlflow_tracking_store(ab_run: tuple[Path, str], tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run_dir, _ = ab_run
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["export", "mlflow", str(run_dir), "--tracking-uri", uri,
            "--artifact-location", str(tmp_path / "mlruns")]  # fmt: skip
    assert main(args) == 0
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("ab-test")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert len(runs) == 24
    records = {r.name: r for r in RunDirectory(run_dir).load_trials()}
    for run in runs:
        tags = run.data.tags
        record = records[tags["trialforge.trial"]]
        assert run.info.status == "FINISHED"
        assert run.data.params == {k: str(v) for k, v in record.parameters.items()}
        assert tags["trialforge.seed"] == str(record.seed)
        assert tags["trialforge.config"] == record.config
        assert tags["mlflow.source.git.commit"] == "example-1"
        assert tags["trialforge.dataVersion"] == "synthetic-v1"
        assert tags["trialforge.artifactUri"] == record.artifact_uri
        assert run.data.metrics["final.val_accuracy"] == pytest.approx(record.values[0])
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1, 2, 3, 4]
        assert tags.get("trialforge.verdict") in ("baseline", "better", "worse", "inconclusive")
    best = [r for r in runs if r.data.tags.get("trialforge.best") == "true"]
    assert len(best) == 1 and best[0].data.tags["trialforge.config"] == "warmup"
    # A second export adds nothing.
    assert main(args) == 0
    assert len(client.search_runs([experiment.experiment_id], max_results=100)) == 24
