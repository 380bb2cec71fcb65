"""Fixtures shared by several unit test files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ab-test.yaml"


@pytest.fixture(scope="session")
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
