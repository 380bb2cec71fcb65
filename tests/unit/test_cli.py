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


def test_validate_of_a_spec_without_settings_never_imports_optuna(tmp_path: Path) -> None:
    """`trialforge validate` is quick: Optuna (half a second of imports) is imported only
    for a spec whose settings its classes check, and then the settings are checked."""
    import subprocess
    import sys

    plain = write_yaml(tmp_path / "plain.yaml", experiment(tmp_path / "out"))
    tuned = experiment(tmp_path / "out")
    tuned["spec"]["search"]["settings"] = {"nStartupTrials": "ten"}
    tuned["spec"]["search"]["algorithm"] = "tpe"
    tuned_file = write_yaml(tmp_path / "tuned.yaml", tuned)
    probe = (
        "import sys; from trialforge.cli import main; rc = main(['validate', sys.argv[1]]); "
        "print('optuna' in sys.modules, rc)"
    )
    for path, expected in ((plain, "False 0"), (tuned_file, "True 1")):
        done = subprocess.run(
            [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, check=False
        )
        assert done.stdout.strip().endswith(expected), done.stdout + done.stderr
    assert "spec.search.settings.nStartupTrials" in done.stderr


def test_the_plots_importances_come_without_scikit_learn() -> None:
    """The end of `trialforge run` imports optuna.importance with scikit-learn hidden (2.4 s
    of imports for evaluators the plots never use); PED-ANOVA still works."""
    import subprocess
    import sys

    probe = """
import sys
from trialforge.cli import _import_importance_lightly
_import_importance_lightly()
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
study.optimize(lambda t: t.suggest_float("x", 0, 1) + 0.1 * t.suggest_float("y", 0, 1), 30)
scores = optuna.importance.get_param_importances(
    study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
hidden = "sklearn" in sys.modules
try:
    import sklearn  # noqa: F401
    later = "imported"
except ImportError:
    later = "absent"
print(hidden, later, max(scores, key=scores.get))
"""
    import importlib.util

    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    hidden, later, top = done.stdout.split()
    assert hidden == "False" and top == "x"
    # Hidden for that import only: a later `import sklearn` works where it is installed.
    assert later == ("imported" if importlib.util.find_spec("sklearn") else "absent")
