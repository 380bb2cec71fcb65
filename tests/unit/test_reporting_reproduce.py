"""reporting/reproduce.py: the command, or the Job, that runs a trial again.

Locally on examples/ab-test.yaml run for real (the ``ab_run`` fixture,
tests/unit/conftest.py): its trainer (examples/trainers/ab_noisy.py) is a
subprocess whose noise comes from TRIALFORGE_SEED, so a reproduced trial gives
the same value.  For the cluster, the standalone Job built from a Trial.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_kube_jobs import trial, xp
from trialforge.cli import main
from trialforge.engine.record import TrialRecord
from trialforge.local.rundir import RunDirectory
from trialforge.reporting.reproduce import cluster_job, reproduction
from trialforge.reporting.rundata import RunData


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


def _run_data(t: dict[str, Any]) -> RunData:
    experiment = xp()
    record = TrialRecord.from_resource(t)
    return RunData("mnist", experiment, {}, [record], "cluster ml/mnist", namespace="ml")


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
