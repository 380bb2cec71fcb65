"""trialforge/__init__.py: the package's public API for trainers."""

from __future__ import annotations

from typing import Any


def test_the_public_report_function_survives_every_internal_import() -> None:
    """`trialforge.report()` is the trainer's API; no subpackage may shadow it."""
    import importlib
    import pkgutil

    import trialforge

    for module in pkgutil.walk_packages(trialforge.__path__, "trialforge."):
        importlib.import_module(module.name)
    assert callable(trialforge.report) and trialforge.report.__module__ == "trialforge.client"
    assert callable(trialforge.seed) and callable(trialforge.parameters)


def test_checkpoint_dir_and_report_checkpoint(tmp_path: Any, monkeypatch: Any, capsys: Any) -> None:
    """The checkpoint convention (docs/checkpoints.md): one directory per trial, named by
    TRIALFORGE_CHECKPOINT_DIR; a checkpoint's step travels as the trialforge_checkpoint metric."""
    import json

    import pytest

    import trialforge
    from trialforge.metrics.contract import CHECKPOINT_METRIC, ENV_CHECKPOINT_DIR

    monkeypatch.delenv(ENV_CHECKPOINT_DIR, raising=False)
    monkeypatch.delenv("TRIALFORGE_REPORT_URL", raising=False)
    assert trialforge.checkpoint_dir() is None  # no checkpoints (a cluster without a volume)
    mount = tmp_path / "mnt"
    mount.mkdir(mode=0o750)
    monkeypatch.setenv(ENV_CHECKPOINT_DIR, str(mount))
    assert trialforge.checkpoint_dir() == mount
    assert mount.stat().st_mode & 0o777 == 0o750  # the mount point is left as it is
    monkeypatch.setenv(ENV_CHECKPOINT_DIR, str(tmp_path / "new" / "dir"))
    assert trialforge.checkpoint_dir().is_dir()  # created when missing (locally)
    trialforge.report(step=7, checkpoint=True, loss=0.5)
    trialforge.report(step=8, loss=0.4)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [{"step": 7, "loss": 0.5, CHECKPOINT_METRIC: 7.0}, {"step": 8, "loss": 0.4}]
    with pytest.raises(TypeError, match="needs the step"):
        trialforge.report(checkpoint=True, loss=1.0)
