"""Experiment science end to end on this machine (issue 8).

examples/ab-test.yaml runs for real: its trainer (examples/trainers/ab_noisy.py)
is a subprocess whose true means are known and whose noise comes from
TRIALFORGE_SEED.  The tests check the verdicts against that truth, the lineage
each trial records, the report, ``reproduce`` and the MLflow export.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from trialforge.api import load_experiment
from trialforge.cli import main
from trialforge.engine.comparison import verdicts
from trialforge.local.rundir import RunDirectory
from trialforge.local.runner import LocalRunner

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ab-test.yaml"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def ab_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The example, run once through the command line; (run dir, its output)."""
    tmp = tmp_path_factory.mktemp("ab")
    run_dir = tmp / "run"
    old = os.environ.get("TRIALFORGE_ARTIFACT_DIR")
    os.environ["TRIALFORGE_ARTIFACT_DIR"] = str(tmp / "artifacts")
    try:
        out = subprocess.run(
            [sys.executable, "-m", "trialforge.cli", "run", str(EXAMPLE), "--dir",
             str(run_dir), "--no-table"],
            capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "COLUMNS": "160"},
        )  # fmt: skip
    finally:
        if old is None:
            os.environ.pop("TRIALFORGE_ARTIFACT_DIR", None)
        else:
            os.environ["TRIALFORGE_ARTIFACT_DIR"] = old
    assert out.returncode == 0, out.stdout + out.stderr
    return run_dir, out.stdout


def test_the_ab_n_example_gives_the_true_verdicts(ab_run: tuple[Path, str]) -> None:
    run_dir, output = ab_run
    state = RunDirectory(run_dir).load_state()
    assert state["phase"] == "Succeeded" and state["reason"] == "Completed"
    rows = state["comparison"]
    # The truth (ab_noisy.py): warmup +0.03, lr 0.2 the same, lr 0.5 -0.04.
    assert verdicts(rows) == {"warmup": "better", "lr-0.2": "inconclusive", "lr-0.5": "worse"}
    by_arm = {r.get("arm"): r for r in rows}
    assert by_arm["baseline"]["n"] == 6 and by_arm["baseline"]["source"] == "arms"
    warmup = by_arm["warmup"]
    assert warmup["ciLow"] <= 0.03 <= warmup["ciHigh"]  # the interval covers the truth
    assert warmup["bootstrapLow"] < warmup["difference"] < warmup["bootstrapHigh"]
    assert by_arm["lr-0.5"]["ciLow"] <= -0.04 <= by_arm["lr-0.5"]["ciHigh"]
    assert "too small to detect" in by_arm["lr-0.2"]["note"]
    assert any(r["role"] == "omnibus" and r["pValue"] < 0.001 for r in rows)
    # The command line shows the table with the verdicts.
    for word in ("vs baseline", "better", "worse", "inconclusive", "welch ANOVA"):
        assert word in output, output


def test_each_trial_records_its_lineage(ab_run: tuple[Path, str]) -> None:
    run_dir, _ = ab_run
    records = RunDirectory(run_dir).load_trials()
    assert len(records) == 24
    assert len({r.seed for r in records}) == 24
    for r in records:
        assert r.role in ("baseline", "arm") and r.config and 0 <= r.repeat < 6
        assert r.code_version == "example-1" and r.data_version == "synthetic-v1"
        assert r.command and r.command[1] == "trainers/ab_noisy.py"
        assert r.node and r.start_time and r.completion_time and r.start_time < r.completion_time
        assert r.artifact_uri and r.artifact_uri.startswith("file://")
    state = RunDirectory(run_dir).load_state()
    best = state["best"]
    assert best["config"] == "warmup" and best["runs"] == 6
    artifact = Path(best["artifactUri"].removeprefix("file://"))
    assert json.loads(artifact.read_text())["warmup"] == 100


def test_reproduce_prints_a_command_that_gives_the_same_result(
    ab_run: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, _ = ab_run
    record = next(r for r in RunDirectory(run_dir).load_trials() if r.config == "lr-0.5")
    assert main(["reproduce", record.name, "--dir", str(run_dir)]) == 0
    line = capsys.readouterr().out.strip()
    assert f"TRIALFORGE_SEED={record.seed}" in line and "TRIALFORGE_PARAMS=" in line
    # Run the printed line in a shell, as a user would, and read its last value.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = subprocess.run(
        ["bash", "-c", line], capture_output=True, text=True, env=env, timeout=60, check=True
    ).stdout
    last = [json.loads(x) for x in out.splitlines() if x.startswith("{") and "step" in x][-1]
    assert last["val_accuracy"] == record.values[0]  # type: ignore[index]
    # --run does the same and says so.
    assert main(["reproduce", str(run_dir / "trials" / f"{record.name}.log"), "--run"]) == 0
    assert json.loads(capsys.readouterr().out)["reproduced"] is True


def test_reproduce_run_notices_a_different_result(
    ab_run: tuple[Path, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run_dir, _ = ab_run
    # A tampered record (another seed than the one that produced its value) does not reproduce.
    copy = tmp_path / "run"
    subprocess.run(["cp", "-r", str(run_dir), str(copy)], check=True)
    journal = copy / "trials.jsonl"
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    data = [line for line in lines if line["name"] == "ab-test-0"][-1]
    data["seed"] += 1
    with open(journal, "a") as handle:  # the last line that names a trial is its record
        handle.write(json.dumps(data) + "\n")
    assert main(["reproduce", "ab-test-0", "--dir", str(copy), "--run"]) == 1
    assert json.loads(capsys.readouterr().out)["reproduced"] is False


def _images(text: str) -> list[bytes]:
    return [
        base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    ]


def test_the_report_renders_in_html_and_markdown(ab_run: tuple[Path, str], tmp_path: Path) -> None:
    run_dir, _ = ab_run
    html_path, md_path = tmp_path / "r.html", tmp_path / "r.md"
    assert main(["report", str(run_dir), "-o", str(html_path)]) == 0
    assert main(["report", str(run_dir), "--format", "md", "-o", str(md_path)]) == 0
    html = html_path.read_text()
    md = md_path.read_text()
    for text in (html, md):
        for words in ("Comparison with the baseline", "Optimisation history",
                      "Parallel coordinates", "Against the baseline", "Trials and lineage",
                      "better", "worse", "inconclusive", "CI (bootstrap)", "p (Holm)",
                      "example-1", "synthetic-v1", "TRIALFORGE_SEED="):  # fmt: skip
            assert words in text, words
        images = _images(text)
        assert len(images) >= 3 and all(i.startswith(PNG) for i in images)
    assert html.startswith("<!DOCTYPE html>") and "</html>" in html
    assert "| arm | n |" in md
    # The default output lands in the run directory.
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").exists()


def _search_doc(tmp: Path) -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    spec = doc["spec"]
    doc["metadata"]["name"] = "ab-search"
    for key in ("arms", "comparison"):
        spec.pop(key)
    spec["repeats"] = 1
    spec["search"] = {"algorithm": "random", "seed": 4}
    spec["budget"] = {"maxTrials": 6, "parallelism": 3}
    spec["confirm"] = {"top": 2, "repeats": 4}
    container = spec["trial"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "TRIALFORGE_ARTIFACT_DIR", "value": str(tmp / "art")}]
    return doc


def test_a_search_with_a_baseline_and_a_confirmation_runs_locally(tmp_path: Path) -> None:
    experiment = load_experiment(_search_doc(tmp_path))
    runner = LocalRunner(experiment, tmp_path / "run", EXAMPLE.parent, stop_grace=0.5)
    result = runner.run()
    assert result.phase == "Succeeded" and "confirmed with 4 fresh runs" in result.message
    roles = [r.role for r in result.records]
    assert roles.count("search") == 6 and roles.count("baseline") == 1
    assert roles.count("confirm") == (2 + 1) * 4
    rows = RunDirectory(tmp_path / "run").load_state()["comparison"]
    assert rows[0]["source"] == "confirm" and rows[0]["n"] == 4
    assert len([r for r in rows if r["role"] == "candidate"]) == 2
    # Importances need a search: this report has them.
    out = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "run"), "-o", str(out)]) == 0
    assert "Parameter importances" in out.read_text()


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
