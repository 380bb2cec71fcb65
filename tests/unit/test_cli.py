"""cli.py: the command line's answers to invalid specs (exit codes, the field named)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.unit.test_local_runner import cli, experiment, write_yaml


def invalid_doc(tmp_path: Path) -> dict[str, Any]:
    doc = experiment(tmp_path / "out", max_trials=2)
    doc["spec"]["parameters"][0].update({"min": 1.0, "max": 0.5})
    doc["spec"]["budget"]["maxTrails"] = 3
    return doc


def test_cli_validate_names_the_field_and_exits_1(tmp_path: Path) -> None:
    bad = write_yaml(tmp_path / "bad.yaml", invalid_doc(tmp_path))
    good = write_yaml(tmp_path / "good.yaml", experiment(tmp_path / "out"))

    done = cli("validate", str(good), str(bad))
    assert done.returncode == 1
    assert f"{good}: ok" in done.stdout
    assert f"{bad}: invalid" in done.stderr
    assert "spec.parameters[0].max:" in done.stderr
    assert "spec.budget.maxTrails: unknown field" in done.stderr
    assert "maxTrials" in done.stderr  # the suggestion

    assert cli("validate", str(good)).returncode == 0


def test_cli_run_refuses_an_invalid_spec_with_exit_2(tmp_path: Path) -> None:
    bad = write_yaml(tmp_path / "bad.yaml", invalid_doc(tmp_path))
    done = cli("run", str(bad), "--dir", str(tmp_path / "run"), "--quiet")
    assert done.returncode == 2
    assert "spec.parameters[0].max:" in done.stderr
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "out").exists()  # no trainer ran
