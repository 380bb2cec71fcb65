"""reporting/optuna_mirror.py: an experiment mirrored into real Optuna storages."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.rundirs import TRIALS, make_run
from trialforge.cli import main
from trialforge.local.rundir import RunDirectory
from trialforge.reporting.optuna_mirror import (
    Mirror,
    MirrorError,
    RunDirSource,
    mirrored_trials,
    open_storage,
)

EXPECTED = {
    "Succeeded": TrialState.COMPLETE,
    "Pruned": TrialState.PRUNED,
    "Failed": TrialState.FAIL,
    "Cancelled": TrialState.FAIL,
    "Running": TrialState.RUNNING,
    "Pending": TrialState.WAITING,
}


def _check_study(trials: list[optuna.trial.FrozenTrial]) -> None:
    assert len(trials) == len(TRIALS)
    for trial, (i, (phase, lr, opt, layers, curve, value)) in zip(
        trials, TRIALS.items(), strict=True
    ):
        attrs = trial.user_attrs
        assert attrs["trialforge_trial"] == f"demo-{i}"
        assert trial.number == i
        assert trial.state == EXPECTED[phase], (i, phase, trial.state)
        assert attrs["phase"] == phase and attrs["seed"] == 100 + i
        assert attrs["code_version"] == "abc123" and attrs["role"] == "search"
        assert trial.params == {"lr": pytest.approx(lr), "opt": opt, "layers": layers}
        assert trial.distributions["lr"].log is True
        # Every step of the first objective, the running trial's read from its log.
        assert trial.intermediate_values == {s + 1: pytest.approx(v) for s, v in enumerate(curve)}
        if phase == "Succeeded":
            assert trial.value == pytest.approx(value)
        elif phase == "Pruned":  # its last intermediate value, as optuna's tell() keeps it
            assert trial.value == pytest.approx(curve[-1])
        else:
            assert trial.values is None
    assert trials[2].user_attrs["reason"] == "EarlyStopped"
    assert trials[4].user_attrs["exit_code"] == 1


def test_every_trial_state_parameter_step_and_lineage_is_mirrored(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    mirror = Mirror(optuna.storages.InMemoryStorage())
    result = mirror.sync(RunDirSource(run).read())
    assert result.created == len(TRIALS)
    trials = mirrored_trials(mirror.storage, "demo")
    _check_study(list(trials))
    study = optuna.load_study(study_name="demo", storage=mirror.storage)
    assert study.metric_names == ["acc"]
    assert study.best_trial.user_attrs["trialforge_trial"] == "demo-3"
    assert study.user_attrs["experiment"] == "demo" and study.user_attrs["search"] == "tpe"
    # Nothing changed: nothing is written again.
    again = mirror.sync(RunDirSource(run).read())
    assert again.created == 0 and again.updated == 0 and again.unchanged == len(TRIALS)


def test_the_mirror_follows_a_running_trial_to_its_end(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    source = RunDirSource(run)
    mirror = Mirror(optuna.storages.InMemoryStorage())
    mirror.sync(source.read())
    directory = RunDirectory(run)
    running = next(r for r in directory.load_trials() if r.phase == "Running")
    # Two more steps in its log: the mirror reads only what is new.
    with open(directory.log_path(running.name), "a") as log:
        log.write(json.dumps({"step": 3, "acc": 0.8}) + "\n" + json.dumps({"step": 4, "acc": 0.9}))
        log.write("\n")
    assert mirror.sync(source.read()).updated == 1
    trial = mirrored_trials(mirror.storage, "demo")[7]
    assert trial.state == TrialState.RUNNING
    assert trial.intermediate_values == {1: 0.55, 2: 0.72, 3: 0.8, 4: 0.9}
    # It ends: the journal's line holds its observations, and it is complete.
    from dataclasses import replace

    from trialforge.api.observation import Observation

    ended = replace(running, phase="Succeeded", values=(0.9,), completion_time=running.start_time)
    obs = [Observation(step=s, metrics={"acc": v}) for s, v in ((1, 0.55), (2, 0.72), (3, 0.8),
                                                              (4, 0.9))]  # fmt: skip
    pending = next(r for r in directory.load_trials() if r.phase == "Pending")
    directory.append_records([(ended, obs), (replace(pending, phase="Running"), None)])
    result = mirror.sync(source.read())
    assert result.finished == 1 and result.updated == 2
    trials = mirrored_trials(mirror.storage, "demo")
    assert trials[7].state == TrialState.COMPLETE and trials[7].value == 0.9
    assert trials[8].state == TrialState.RUNNING and trials[8].datetime_start is not None


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_export_writes_a_storage_that_optuna_reads_and_is_idempotent(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = make_run(tmp_path / "run")
    url = f"sqlite:///{tmp_path / 'o.db'}" if kind == "sqlite" else str(tmp_path / "o.log")
    assert main(["export", "optuna", str(run), "--storage", url]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["study"] == "demo" and summary["created"] == len(TRIALS)
    _check_study(list(optuna.load_study(study_name="demo", storage=open_storage(url)).trials))
    # Exported again: the trials are found by name, none is added.
    assert main(["export", "optuna", str(run), "--storage", url]) == 0
    assert json.loads(capsys.readouterr().out)["created"] == 0
    assert len(optuna.load_study(study_name="demo", storage=open_storage(url)).trials) == 9
    # Another study name beside it.
    assert main(["export", "optuna", str(run), "--storage", url, "--study-name", "b"]) == 0
    names = {s.study_name for s in optuna.get_all_study_summaries(open_storage(url))}
    assert names == {"demo", "b"}


def test_bad_storage_and_a_study_of_other_directions_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = make_run(tmp_path / "run")
    url = f"sqlite:///{tmp_path / 'o.db'}"
    optuna.create_study(study_name="demo", storage=url, direction="minimize")
    assert main(["export", "optuna", str(run), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "study 'demo' exists" in err and "minimize" in err and "Traceback" not in err
    assert main(["export", "optuna", str(run), "--storage", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["export", "optuna", str(tmp_path / "nothing"), "--storage", url]) == 2
    assert "not a run directory" in capsys.readouterr().err
    with pytest.raises(MirrorError, match="cannot open"):
        open_storage("nosuchdb://x")


def test_a_trial_finished_in_the_storage_by_someone_else_is_left_alone(tmp_path: Path) -> None:
    """optuna-dashboard has a "Fail trial" button: the mirror does not fight it."""
    run = make_run(tmp_path / "run")
    source = RunDirSource(run)
    mirror = Mirror(optuna.storages.InMemoryStorage())
    mirror.sync(source.read())
    running = mirror.trial_ids()["demo-7"]
    mirror.storage.set_trial_state_values(running, TrialState.FAIL)
    with open(RunDirectory(run).log_path("demo-7"), "a") as log:
        log.write(json.dumps({"step": 3, "acc": 0.8}) + "\n")
    result = mirror.sync(source.read())
    assert result.updated == 0
    trial = mirrored_trials(mirror.storage, "demo")[7]
    assert trial.state == TrialState.FAIL and 3 not in trial.intermediate_values


def test_two_objectives_and_an_unreachable_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pruned trial of a two-objective study has no value (Optuna keeps none either)."""
    from tests.factories import experiment_doc
    from trialforge.engine.record import TrialRecord
    from trialforge.local.rundir import state_of

    doc = experiment_doc(
        objective=None,
        objectives=[{"metric": "acc", "direction": "maximize"},
                    {"metric": "size", "direction": "minimize"}],
    )  # fmt: skip
    directory = RunDirectory(tmp_path / "run")
    directory.create(doc)
    params = {"lr": 0.01, "opt": "sgd", "layers": 2}
    directory.append_records([
        (TrialRecord("demo-0", 0, 0, "Succeeded", params, values=(0.9, 3.0)), None),
        (TrialRecord("demo-1", 1, 0, "Pruned", params, intermediate={1: 0.2}), None),
    ])  # fmt: skip
    directory.save_state(state_of({"phase": "Succeeded"}, "demo", tmp_path / "run"))
    mirror = Mirror(optuna.storages.InMemoryStorage())
    mirror.sync(RunDirSource(tmp_path / "run").read())
    done, pruned = mirrored_trials(mirror.storage, "demo")
    assert done.values == [0.9, 3.0] and pruned.state == TrialState.PRUNED
    assert pruned.values is None
    study = optuna.load_study(study_name="demo", storage=mirror.storage)
    assert study.metric_names == ["acc", "size"]

    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: x}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    args = ["export", "optuna", "--experiment", "x", "--kubeconfig", str(config), "--storage",
            str(tmp_path / "o.log")]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "unreachable" in err and "Traceback" not in err
