"""local/runner.py: the local runtime end to end (issue 3, items 6 and 7; issue 8).

Every test runs trainers as real subprocesses, through ``LocalRunner`` or the
``trialforge`` command line: tiny ones (tests/unit/trainers/tiny.py), whose own
evidence and the run directory say what happened; and examples/ab-test.yaml
(the ``ab_run`` fixture), whose verdicts are checked against the known truth.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from trialforge.api import load_experiment
from trialforge.api.status import ExperimentStatus
from trialforge.cli import main
from trialforge.engine.comparison import verdicts
from trialforge.engine.record import TrialRecord
from trialforge.local.rundir import RunDirectory, status_of
from trialforge.local.runner import LocalRunError, LocalRunner, RunResult

TRAINER = Path(__file__).parent / "trainers" / "tiny.py"
STOP_GRACE = 0.5


# --- helpers ------------------------------------------------------------------------


def experiment(
    out: Path,
    *trainer_args: str,
    name: str = "tiny",
    max_trials: int = 1,
    parallelism: int = 1,
    **spec: Any,
) -> dict[str, Any]:
    """An Experiment whose trials run tiny.py with ``trainer_args``; spec fields override."""
    doc: dict[str, Any] = {
        "apiVersion": "trialforge.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "loss", "direction": "minimize"},
            "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
            "search": {"algorithm": "random", "seed": 3},
            "budget": {"maxTrials": max_trials, "parallelism": parallelism},
            "trial": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "trainer",
                                "image": "registry.example/tiny:1",
                                "command": [
                                    "python",
                                    str(TRAINER),
                                    "--out",
                                    str(out),
                                    "--x=${params.x}",
                                    *trainer_args,
                                ],
                            }
                        ]
                    }
                }
            },
        },
    }
    for key, value in spec.items():
        if key == "trial":
            doc["spec"]["trial"].update(value)
        else:
            doc["spec"][key] = value
    return doc


def run_local(doc: dict[str, Any], tmp_path: Path) -> tuple[RunResult, RunDirectory]:
    run_dir = tmp_path / "run"
    runner = LocalRunner(load_experiment(doc), run_dir, tmp_path, stop_grace=STOP_GRACE)
    return runner.run(), RunDirectory(run_dir)


def trainer_events(out: Path) -> list[list[str]]:
    """The lines tiny.py appended to OUT/events.log, split into fields."""
    path = out / "events.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def pids(out: Path, trial: str) -> list[int]:
    """The trainer's and its children's process ids, for one trial."""
    return [int(e[2]) for e in trainer_events(out) if e[0] in ("start", "child") and e[1] == trial]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has ended; only its parent (maybe init) has yet to reap it


def ended(out: Path, trial: str) -> bool:
    """Whether the trainer of ``trial`` got to its end (it was not stopped on the way)."""
    return any(e[0] == "end" and e[1] == trial for e in trainer_events(out))


def assert_gone(pid_list: list[int]) -> None:
    """The processes are gone (a stopped trainer dies at once; the poll allows for a slow
    machine, well within the seconds each would live if nothing had stopped it)."""
    assert pid_list, "the trainer left no pids to check"
    deadline = time.monotonic() + 5.0
    while any(alive(p) for p in pid_list) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [p for p in pid_list if alive(p)] == [], "processes of a stopped trial still run"


def by_name(records: list[TrialRecord]) -> dict[str, TrialRecord]:
    return {r.name: r for r in records}


def expected_loss(x: float, steps: int = 3) -> float:
    return (x - 0.3) ** 2 + 1.0 / steps  # tiny.py's loss at its last step


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trialforge.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def journal_lines(rd: RunDirectory) -> list[dict]:
    return [json.loads(line) for line in rd.journal_path.read_text().splitlines()]


def journal_record(rd: RunDirectory, name: str) -> dict:
    """A trial's record on disk: the journal's last line that names it."""
    return [line for line in journal_lines(rd) if line["name"] == name][-1]


# --- trials that succeed, fail, time out, diverge ---------------------------------------


def test_successful_trials_are_recorded_in_the_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    doc = experiment(out, "--steps", "3", max_trials=3, parallelism=1)
    result, rd = run_local(doc, tmp_path)

    assert (result.phase, result.reason) == ("Succeeded", "BudgetExhausted")
    assert [r.name for r in result.records] == ["tiny-0", "tiny-1", "tiny-2"]
    for record in result.records:
        assert record.phase == "Succeeded" and record.reason == "Completed"
        assert record.exit_code == 0
        assert record.values == pytest.approx((expected_loss(record.parameters["x"]),))
        assert record.start_time is not None and record.completion_time is not None
        assert record.start_time <= record.completion_time
        # Each attempt has its record (with its observations) and its output on disk.
        on_disk = journal_record(rd, record.name)
        assert on_disk["phase"] == "Succeeded" and on_disk["values"] == list(record.values)
        assert [o["step"] for o in on_disk["observations"]] == [0, 1, 2]
        log = rd.log_path(record.name).read_text().splitlines()
        assert len(log) == 3 and json.loads(log[-1])["step"] == 2
        observations = rd.load_observations(record.name)
        assert [o.step for o in observations] == [0, 1, 2]
        assert observations[-1].metrics["loss"] == pytest.approx(record.values[0])

    state = rd.load_state()
    assert state["phase"] == "Succeeded" and state["reason"] == "BudgetExhausted"
    assert state["trials"]["succeeded"] == 3 and state["trials"]["total"] == 3
    best = min(result.records, key=lambda r: r.values[0])
    assert state["best"]["trial"] == best.name
    assert state["best"]["values"] == list(best.values) == [state["best"]["value"]]
    assert state["bestValue"] == best.values[0]
    # The one status shape (engine.status): what a cluster Experiment's status is too
    # (tests/cluster/test_operator.py checks the same of a finished Experiment).
    ExperimentStatus.model_validate(status_of(state))
    assert set(state["best"]) == {"trial", "parameters", "value", "values", "config", "runs"}
    assert state["completionTime"] >= state["startTime"]
    recorded = yaml.safe_load((rd.root / "experiment.yaml").read_text())
    assert recorded["metadata"]["name"] == "tiny"
    assert recorded["spec"]["trial"]["template"] == doc["spec"]["trial"]["template"]
    assert recorded["spec"]["budget"]["maxTrials"] == 3
    events = Counter(e["event"] for e in rd.events())
    assert events["TrialSucceeded"] == 3 and events["BudgetExhausted"] == 1

    # Running a finished experiment again starts nothing and says the same.
    starts = len(trainer_events(out))
    again, _ = run_local(doc, tmp_path)
    assert (again.phase, again.reason) == ("Succeeded", "BudgetExhausted")
    assert len(trainer_events(out)) == starts


def test_failing_trainer_fails_its_trial_with_the_exit_code(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result, rd = run_local(experiment(out, "--exit", "3"), tmp_path)

    [record] = result.records
    assert (record.phase, record.reason, record.exit_code) == ("Failed", "Error", 3)
    assert "code 3" in (record.message or "")
    assert record.values is None
    assert (result.phase, result.reason) == ("Failed", "NoTrialSucceeded")
    assert rd.load_state()["phase"] == "Failed"


def test_a_program_that_cannot_start_fails_the_trial_not_the_run(tmp_path: Path) -> None:
    doc = experiment(tmp_path / "out", max_trials=2)
    container = doc["spec"]["trial"]["template"]["spec"]["containers"][0]
    container["command"] = [str(tmp_path / "no-such-trainer"), "${params.x}"]
    result, rd = run_local(doc, tmp_path)

    assert [(r.phase, r.exit_code) for r in result.records] == [("Failed", 127)] * 2
    assert "cannot start" in rd.log_path("tiny-0").read_text()
    assert (result.phase, result.reason) == ("Failed", "NoTrialSucceeded")


@pytest.mark.parametrize("ignore_term", [False, True], ids=["sigterm", "needs-sigkill"])
def test_timeout_fails_the_trial_and_kills_its_process_group(
    tmp_path: Path, ignore_term: bool
) -> None:
    out = tmp_path / "out"
    args = ["--hang", *(["--ignore-term"] if ignore_term else [])]
    doc = experiment(out, *args, trial={"timeout": "1s", "retries": 0})
    result, rd = run_local(doc, tmp_path)

    [record] = result.records
    assert (record.phase, record.reason) == ("Failed", "Timeout")
    assert record.exit_code == (-signal.SIGKILL if ignore_term else -signal.SIGTERM)
    # The trainer and the child it started are both gone: the whole group was stopped.
    trial_pids = pids(out, "tiny-0")
    assert len(trial_pids) == 2
    assert_gone(trial_pids)
    # Stopped by a signal (SIGKILL only for the one that ignores SIGTERM), not left to
    # sleep its 20 s to the end; and only once its 1 s had passed (the runner's own clock).
    assert not ended(out, "tiny-0")
    assert record.completion_time - record.start_time >= 1.0
    events = Counter(e["event"] for e in rd.events())
    assert events["TrialTimeout"] == 1  # once, not once per loop while it dies
    assert (result.phase, result.reason) == ("Failed", "NoTrialSucceeded")


@pytest.mark.parametrize(
    ("args", "mid_run"),
    [
        (["--steps", "3", "--nan-at", "2"], False),  # the last value is NaN, then it exits 0
        (["--steps", "200", "--sleep", "0.05", "--nan-at", "1"], True),  # diverges, goes on
    ],
    ids=["at-exit", "mid-run"],
)
def test_non_finite_objective_fails_the_trial_without_retry(
    tmp_path: Path, args: list[str], mid_run: bool
) -> None:
    out = tmp_path / "out"
    doc = experiment(out, *args, trial={"retries": 2})
    result, rd = run_local(doc, tmp_path)

    [record] = result.records  # never retried, though retries: 2
    assert (record.phase, record.reason) == ("Failed", "ObjectiveNotFinite")
    assert record.retryable is False
    assert "loss" in (record.message or "") and "nan" in (record.message or "")
    assert record.values is None
    assert_gone(pids(out, "tiny-0"))
    if mid_run:  # stopped, not left to run its 200 steps (10 s)
        assert not ended(out, "tiny-0")
        assert len(rd.load_observations("tiny-0")) < 200
    assert (result.phase, result.reason) == ("Failed", "NoTrialSucceeded")
    assert rd.load_state()["trials"]["retried"] == 0


@pytest.mark.parametrize(
    "early_stopping",
    [
        {"algorithm": "median", "settings": {"nStartupTrials": 2, "nWarmupSteps": 0}},
        {"algorithm": "asha", "settings": {"minResource": 1, "reductionFactor": 2}},
        # Two brackets (rungs from step 1 and from step 2); for the study "tiny", Optuna's
        # crc32 of the name and number puts trials 0 and 2 in the same one.
        {
            "algorithm": "hyperband",
            "settings": {"minResource": 1, "maxResource": 3, "reductionFactor": 2},
        },
    ],
    ids=["median", "asha", "hyperband"],
)
def test_pruner_stops_a_hopeless_trial_and_kills_it(
    tmp_path: Path, early_stopping: dict[str, Any]
) -> None:
    out = tmp_path / "out"
    # Trials 0 and 1 report loss 0.5 at steps 0..2; trial 2 reports 1000 every 50 ms
    # for 200 steps (10 s) unless it is stopped.
    doc = experiment(
        out,
        "--steps",
        "3",
        "--value",
        "0.5",
        "--bad-from",
        "2",
        max_trials=3,
        earlyStopping=early_stopping,
    )
    result, rd = run_local(doc, tmp_path)

    records = by_name(result.records)
    assert [records[f"tiny-{i}"].phase for i in range(3)] == ["Succeeded", "Succeeded", "Pruned"]
    pruned = records["tiny-2"]
    assert pruned.reason == "EarlyStopped"
    assert pruned.values is None
    assert len(rd.load_observations("tiny-2")) < 20
    assert_gone(pids(out, "tiny-2"))
    assert not ended(out, "tiny-2")  # stopped, not left to run its 200 steps (10 s)
    assert (result.phase, result.reason) == ("Succeeded", "BudgetExhausted")
    state = rd.load_state()
    assert state["trials"]["pruned"] == 1 and state["trials"]["succeeded"] == 2
    assert Counter(e["event"] for e in rd.events())["TrialPruned"] == 1


# --- retries and failure budget ---------------------------------------------------------


def test_failed_attempt_is_retried_under_a_new_name(tmp_path: Path) -> None:
    out = tmp_path / "out"
    doc = experiment(out, "--fail-attempts", "1", max_trials=2, trial={"retries": 1})
    result, rd = run_local(doc, tmp_path)

    records = by_name(result.records)
    assert list(records) == ["tiny-0", "tiny-0-r1", "tiny-1", "tiny-1-r1"]
    for i in range(2):
        first, retry = records[f"tiny-{i}"], records[f"tiny-{i}-r1"]
        assert (first.phase, first.reason, first.exit_code) == ("Failed", "Error", 1)
        assert (retry.phase, retry.attempt, retry.reason) == ("Succeeded", 1, "Completed")
        # The same configuration again, with the same seed.
        assert retry.parameters == first.parameters and retry.seed == first.seed
    # TRIALFORGE_ATTEMPT told each attempt which one it was.
    attempts = [(e[1], e[4]) for e in trainer_events(out) if e[0] == "start"]
    assert attempts == [("tiny-0", "0"), ("tiny-0-r1", "1"), ("tiny-1", "0"), ("tiny-1-r1", "1")]
    assert (result.phase, result.reason) == ("Succeeded", "BudgetExhausted")
    counts = rd.load_state()["trials"]
    assert counts["retried"] == 2 and counts["succeeded"] == 2 and counts["failed"] == 0
    assert Counter(e["event"] for e in rd.events())["TrialRetried"] == 2


def test_retries_run_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    doc = experiment(out, "--fail-attempts", "9", max_trials=1, trial={"retries": 1})
    result, rd = run_local(doc, tmp_path)

    assert [(r.name, r.phase) for r in result.records] == [
        ("tiny-0", "Failed"),
        ("tiny-0-r1", "Failed"),
    ]
    assert (result.phase, result.reason) == ("Failed", "NoTrialSucceeded")
    assert rd.load_state()["trials"]["retried"] == 1


def test_too_many_failures_stop_the_experiment(tmp_path: Path) -> None:
    out = tmp_path / "out"
    doc = experiment(out, "--exit", "1", max_trials=6)
    doc["spec"]["budget"]["maxFailedTrials"] = 1
    result, rd = run_local(doc, tmp_path)

    # One failure is allowed; the second is one too many, and nothing more starts.
    assert [(r.name, r.phase) for r in result.records] == [
        ("tiny-0", "Failed"),
        ("tiny-1", "Failed"),
    ]
    assert (result.phase, result.reason) == ("Failed", "TooManyFailures")
    assert "maxFailedTrials" in result.message
    state = rd.load_state()
    assert (state["phase"], state["reason"]) == ("Failed", "TooManyFailures")
    assert len([e for e in trainer_events(out) if e[0] == "start"]) == 2


# --- budget, parallelism, parameters, metrics, goal ----------------------------------


@pytest.mark.parametrize(("parallelism", "max_trials"), [(2, 5), (3, 7)])
def test_parallelism_and_max_trials_are_respected(
    tmp_path: Path, parallelism: int, max_trials: int
) -> None:
    out = tmp_path / "out"
    doc = experiment(
        out, "--steps", "3", "--sleep", "0.08", max_trials=max_trials, parallelism=parallelism
    )
    result, _ = run_local(doc, tmp_path)

    assert (result.phase, result.reason) == ("Succeeded", "BudgetExhausted")
    assert sorted(r.index for r in result.records) == list(range(max_trials))
    assert all(r.phase == "Succeeded" and r.attempt == 0 for r in result.records)
    # The trainers' own clocks: at no moment did more than `parallelism` run.
    spans = {}
    for event in trainer_events(out):
        if event[0] in ("start", "end"):
            spans.setdefault(event[1], {})[event[0]] = float(event[3])
    assert len(spans) == max_trials
    assert all(set(s) == {"start", "end"} for s in spans.values())
    # An end at the same instant as a start counts first (-1 sorts before +1).
    edges = sorted(
        [(s["start"], 1) for s in spans.values()] + [(s["end"], -1) for s in spans.values()]
    )
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    assert peak == parallelism  # never more, and the slots were really used


def test_parameters_and_trial_identity_reach_the_trainer(tmp_path: Path) -> None:
    out = tmp_path / "out"
    doc = experiment(out, "--dump", "--tag", "${params.opt}-${params.n}", max_trials=2)
    doc["spec"]["parameters"] += [
        {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
        {"name": "n", "type": "int", "min": 1, "max": 4},
    ]
    container = doc["spec"]["trial"]["template"]["spec"]["containers"][0]
    container["env"] = [
        {"name": "TEST_X", "value": "x=${params.x}"},
        {"name": "TEST_PLAIN", "value": "plain"},
    ]
    result, _ = run_local(doc, tmp_path)

    assert result.phase == "Succeeded"
    for record in result.records:
        params = record.parameters
        dump = json.loads((out / f"{record.name}.env.json").read_text())
        argv, env = dump["argv"], dump["env"]
        assert argv[1:4] == ["--out", str(out), f"--x={params['x']!r}"]
        assert argv[-2:] == ["--tag", f"{params['opt']}-{params['n']}"]
        assert json.loads(env["TRIALFORGE_PARAMS"]) == params
        assert env["TRIALFORGE_TRIAL"] == record.name
        assert env["TRIALFORGE_SEED"] == str(record.seed)
        assert env["TRIALFORGE_EXPERIMENT"] == "tiny"
        assert env["TRIALFORGE_ATTEMPT"] == "0"
        assert env["TEST_X"] == f"x={params['x']!r}"
        assert env["TEST_PLAIN"] == "plain"
        # The substituted value is what the trainer trained with.
        assert record.values == pytest.approx([expected_loss(params["x"])])
    assert len({r.seed for r in result.records}) == 2
    assert len({r.parameters["x"] for r in result.records}) == 2


def test_junk_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result, rd = run_local(experiment(out, "--steps", "3", "--junk", "2"), tmp_path)

    [record] = result.records
    assert record.phase == "Succeeded"
    assert record.junk_lines == 6
    assert len(rd.load_observations("tiny-0")) == 3
    assert rd.log_path("tiny-0").read_text().count("not a metric") == 6
    assert journal_record(rd, "tiny-0")["junkLines"] == 6


def test_goal_reached_stops_the_experiment_early(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # Trial 0 reports 0.9 at once, trial 1 trains slowly (10 s), trial 2 reports 0.3,
    # which meets the goal while trial 1 still runs.
    doc = experiment(out, "--values", "0.9,0.9,0.3", "--slow", "1", max_trials=10, parallelism=2)
    doc["spec"]["objective"]["goal"] = 0.5
    result, rd = run_local(doc, tmp_path)

    assert (result.phase, result.reason) == ("Succeeded", "GoalReached")
    records = by_name(result.records)
    assert [(n, r.phase) for n, r in records.items()] == [
        ("tiny-0", "Succeeded"),
        ("tiny-1", "Cancelled"),
        ("tiny-2", "Succeeded"),
    ]
    assert records["tiny-2"].values == (0.3,)
    assert records["tiny-1"].reason == "GoalReached"
    assert_gone(pids(out, "tiny-1"))
    assert not ended(out, "tiny-1")  # cancelled, not left to run its 200 steps (10 s)
    assert sorted(e[1] for e in trainer_events(out) if e[0] == "start") == list(records)
    state = rd.load_state()
    assert (state["phase"], state["reason"]) == ("Succeeded", "GoalReached")
    assert state["best"]["trial"] == "tiny-2"
    assert state["trials"]["cancelled"] == 1 and state["trials"]["succeeded"] == 2


# --- the command line: interrupt and resume, refusals, validation ------------------------


def write_yaml(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_interrupt_then_resume_finishes_without_repeating_a_trial(tmp_path: Path) -> None:
    out, run_dir = tmp_path / "out", tmp_path / "run"
    # Trials 0 and 1 finish at once; 2 and up keep training until OUT/gate exists.
    doc = experiment(
        out, "--steps", "2", "--sleep", "0.05", "--gate-from", "2", max_trials=5, parallelism=2
    )
    spec_file = write_yaml(tmp_path / "exp.yaml", doc)
    argv = [sys.executable, "-m", "trialforge.cli", "run", str(spec_file), "--dir", str(run_dir)]
    rd = RunDirectory(run_dir)

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:

        def mid_run() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the run ended early: {proc.communicate()}")
            done = {r.name for r in rd.load_trials() if r.phase == "Succeeded"}
            started = {e[1] for e in trainer_events(out) if e[0] == "start"}
            return {"tiny-0", "tiny-1"} <= done and {"tiny-2", "tiny-3"} <= started

        wait_for(mid_run, 30, "trials 0-1 to succeed and 2-3 to be running")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Interrupted" in stdout  # the summary says so
    state = rd.load_state()
    # Suspended until it runs again, as a suspended cluster Experiment would be.
    assert (state["phase"], state["reason"]) == ("Suspended", "Interrupted")
    # Ctrl-C stopped the running trainers too.
    assert_gone(pids(out, "tiny-2") + pids(out, "tiny-3"))
    before = {r.name: r for r in rd.load_trials() if r.phase == "Succeeded"}
    assert set(before) == {"tiny-0", "tiny-1"}

    (out / "gate").touch()
    second = subprocess.run(
        [*argv, "--quiet", "--json"], capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 0, second.stderr
    final_state = json.loads(second.stdout)
    assert (final_state["phase"], final_state["reason"]) == ("Succeeded", "BudgetExhausted")
    assert final_state["startTime"] == state["startTime"]

    records = rd.load_trials()
    assert sorted(r.index for r in records) == [0, 1, 2, 3, 4]  # one record per index
    assert all(r.phase == "Succeeded" and r.attempt == 0 for r in records)
    for name, earlier in before.items():
        now = by_name(records)[name]
        assert now.start_time == earlier.start_time  # not run again
        assert now.values == earlier.values
    starts = Counter(e[1] for e in trainer_events(out) if e[0] == "start")
    ends = Counter(e[1] for e in trainer_events(out) if e[0] == "end")
    assert starts == {"tiny-0": 1, "tiny-1": 1, "tiny-2": 2, "tiny-3": 2, "tiny-4": 1}
    assert ends == dict.fromkeys(starts, 1)  # no index ran to completion twice
    # The interrupted attempts start over: their output is that of the second run only.
    for name in ("tiny-2", "tiny-3"):
        assert [o.step for o in rd.load_observations(name)][:2] == [0, 1]
        # The runner's own stop was a disruption of each (issue 22), not a failure.
        assert by_name(records)[name].disruptions == 1
        assert by_name(records)[name].disruption_history[0]["reason"] == "Interrupted"
    kinds = [e["event"] for e in rd.events()]
    assert kinds.index("Interrupted") < kinds.index("Resumed") < kinds.index("BudgetExhausted")

    # What the run directory holds after a run with successes.
    assert {"state.json", "experiment.yaml", "events.jsonl", "history.svg"} <= {
        p.name for p in run_dir.iterdir()
    }
    assert (run_dir / "history.svg").read_text().startswith("<svg ")
    assert {r["name"] for r in journal_lines(rd)} == {r.name for r in records}
    for record in records:
        assert rd.log_path(record.name).stat().st_size > 0
        assert len(rd.load_observations(record.name)) == 2
    # A file per trial: its log.
    assert sorted(p.name for p in rd.trials_dir.iterdir()) == [f"tiny-{i}.log" for i in range(5)]


def test_a_record_left_unreadable_counts_as_never_written_and_its_trial_runs_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The journal of trial records is not fsynced: after a power cut its last
    # lines can be zeros (their data never reached the disk) or cut short.
    out = tmp_path / "out"
    doc = experiment(out, "--steps", "2", max_trials=3)
    first, rd = run_local(doc, tmp_path)
    assert first.phase == "Succeeded"
    before = by_name(rd.load_trials())
    damaged: list[str] = []
    for line in rd.journal_path.read_text().splitlines():
        name = json.loads(line)["name"]
        if name == "tiny-1":
            line = "\0" * len(line)
        elif name == "tiny-2":
            line = line[: len(line) // 2]
        damaged.append(line)
    rd.journal_path.write_text("\n".join(damaged) + "\n")

    assert sorted(r.name for r in rd.load_trials()) == ["tiny-0"]
    unreadable = [d for d in damaged if not d.startswith('{"name": "tiny-0"')]
    assert caplog.text.count("trials.jsonl:") == len(unreadable)
    assert caplog.text.count("is unreadable") == len(unreadable)

    again, rd = run_local(doc, tmp_path)
    assert (again.phase, again.reason) == ("Succeeded", "BudgetExhausted")
    after = by_name(rd.load_trials())
    assert sorted(after) == ["tiny-0", "tiny-1", "tiny-2"]
    assert all(r.phase == "Succeeded" for r in after.values())
    assert after["tiny-0"].start_time == before["tiny-0"].start_time  # not run again
    starts = Counter(e[1] for e in trainer_events(out) if e[0] == "start")
    assert starts == {"tiny-0": 1, "tiny-1": 2, "tiny-2": 2}
    # Run again with the parameters the search gave that index the first time.
    for name in ("tiny-1", "tiny-2"):
        assert after[name].parameters == before[name].parameters


def test_resume_with_a_different_spec_is_refused(tmp_path: Path) -> None:
    out, run_dir = tmp_path / "out", tmp_path / "run"
    doc = experiment(out, "--steps", "2", max_trials=1)
    spec_file = write_yaml(tmp_path / "exp.yaml", doc)
    result, _ = run_local(doc, tmp_path)
    assert result.phase == "Succeeded"
    state_before = (run_dir / "state.json").read_bytes()
    starts = len(trainer_events(out))

    changed = copy.deepcopy(doc)
    changed["spec"]["parameters"][0]["max"] = 2.0
    changed_file = write_yaml(tmp_path / "changed.yaml", changed)
    refused = cli("run", str(changed_file), "--dir", str(run_dir), "--quiet")
    assert refused.returncode == 2
    assert "spec.parameters cannot change" in refused.stderr and str(run_dir) in refused.stderr
    # Nothing in the directory was touched and nothing ran.
    assert (run_dir / "state.json").read_bytes() == state_before
    assert len(trainer_events(out)) == starts
    with pytest.raises(LocalRunError, match=r"spec\.parameters: spec\.parameters cannot"):
        LocalRunner(load_experiment(changed), run_dir, tmp_path).run()

    # The same spec from the YAML file is accepted: it is the run it recorded.
    same = cli("run", str(spec_file), "--dir", str(run_dir), "--quiet")
    assert same.returncode == 0, same.stderr
    assert len(trainer_events(out)) == starts


def test_a_raised_budget_resumes_a_finished_run_with_only_the_new_trials(tmp_path: Path) -> None:
    """The spec-change policy a cluster Experiment follows (engine.changes), locally."""
    out, run_dir = tmp_path / "out", tmp_path / "run"
    doc = experiment(out, "--steps", "2", max_trials=2)
    result, _ = run_local(doc, tmp_path)
    assert (result.phase, len(result.records)) == ("Succeeded", 2)
    first = {r.name: r for r in result.records}

    raised = copy.deepcopy(doc)
    raised["spec"]["budget"]["maxTrials"] = 4
    again = LocalRunner(load_experiment(raised), run_dir, tmp_path).run()
    assert again.phase == "Succeeded"
    assert [r.name for r in again.records] == ["tiny-0", "tiny-1", "tiny-2", "tiny-3"]
    # The trials that ran are kept as they were; only the new ones ran.
    assert {n: again.records[i] for i, n in enumerate(first)} == first
    started = [e[1] for e in trainer_events(out) if e[0] == "start"]
    assert sorted(started) == ["tiny-0", "tiny-1", "tiny-2", "tiny-3"]
    rd = RunDirectory(run_dir)
    assert rd.load_state()["trials"]["total"] == 4
    assert [e["event"] for e in rd.events()].count("SpecChanged") == 1
    assert load_experiment(rd.recorded_spec()).spec.budget.max_trials == 4


ROOT = Path(__file__).resolve().parents[2]


EXAMPLE = ROOT / "examples" / "ab-test.yaml"


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


def test_a_sampler_that_fails_once_it_samples_ends_the_run_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # TPE checks priorWeight only when it first models the trials (after nStartupTrials):
    # validation builds the sampler and accepts it, the second suggestion fails.
    out = tmp_path / "out"
    doc = experiment(
        out, "--steps", "2", max_trials=3,
        search={"algorithm": "tpe", "seed": 1,
                "settings": {"nStartupTrials": 1, "priorWeight": -1.0}},
    )  # fmt: skip
    spec_file = tmp_path / "xp.yaml"
    spec_file.write_text(yaml.safe_dump(doc))
    code = main(["run", str(spec_file), "--dir", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "error: spec.search: the tpe sampler cannot suggest trial 1" in err
    assert "prior_weight" in err and "Traceback" not in err
    rd = RunDirectory(tmp_path / "run")
    [event] = [e for e in rd.events() if e["event"] == "CannotPlan"]
    assert "prior_weight" in event["message"]
    # What ran before is kept: the first trial, succeeded; no other was started.
    assert [e[1] for e in trainer_events(out) if e[0] == "start"] == ["tiny-0"]


def test_a_format_1_run_directory_resumes_with_a_raised_budget_and_becomes_format_2(
    tmp_path: Path,
) -> None:
    old = Path(__file__).parents[1] / "data" / "run-directories"
    run_dir = tmp_path / "run"
    import shutil

    shutil.copytree(old / "v1", run_dir)
    doc = yaml.safe_load((old / "v1.yaml").read_text())
    doc["spec"]["budget"]["maxTrials"] = 4
    spec_file = write_yaml(tmp_path / "v1.yaml", doc)
    done = cli("run", str(spec_file), "--dir", str(run_dir), "--quiet", "--json")
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["formatVersion"] == 2 and "pid" not in state  # it has ended
    assert state["trials"]["succeeded"] == 4
    lines = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    assert [k for line in lines for k in line if "_" in k] == []
    rd = RunDirectory(run_dir)
    assert [r.name for r in rd.load_trials()] == [f"format-one-{i}" for i in range(4)]


def test_a_long_run_keeps_one_observation_of_each_ended_trial_and_shows_the_latest(
    tmp_path: Path,
) -> None:
    """Memory and the live table do not grow with the steps or the trials run: an
    ended trial's observations are on disk, the runner keeps its last one (for the
    tables), and the live table's rows are the running trials and the latest."""
    out = tmp_path / "out"
    doc = experiment(out, "--steps", "5", max_trials=6, parallelism=2)
    runner = LocalRunner(load_experiment(doc), tmp_path / "run", tmp_path, stop_grace=STOP_GRACE)
    seen: list[tuple[set[str], set[str], list[str]]] = []

    def watch(r: LocalRunner, plan: Any) -> None:
        seen.append((set(r.processes), set(r.records), [x.name for x in r.recent_records(2)]))

    runner.on_update = watch
    result = runner.run()
    assert result.phase == "Succeeded"
    rd = RunDirectory(tmp_path / "run")
    for record in result.records:
        assert [o.step for o in rd.load_observations(record.name)] == [0, 1, 2, 3, 4]
        assert [o.step for o in runner.observations[record.name]] == [4]
    for running, names, shown in seen:
        newest = sorted(names, key=lambda n: int(n.rsplit("-", 1)[1]))[-2:]
        assert set(shown) == running | set(newest)


def test_the_live_table_counts_the_trials_it_does_not_show() -> None:
    from trialforge.reporting.table import trials_table

    spec = load_experiment(experiment(Path("/tmp"))).spec
    shown = [TrialRecord(f"tiny-{i}", i, 0, "Succeeded", {"x": 0.5}) for i in (8, 9)]
    table = trials_table(spec, shown, {}, None, max_rows=30, total=10_000)
    assert table.caption == "9998 more trials not shown" and table.row_count == 2


# --- conditional parameters, constraints, warm starts (issue 17) ------------------------


def test_a_conditional_parameter_reaches_only_the_trials_where_it_is_active(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    doc = experiment(out, "--dump", "--tag=${params.m}", max_trials=8, parallelism=2)
    doc["spec"]["parameters"] = [
        {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
        {"name": "m", "type": "discrete", "values": [0.5, 0.9], "when": {"opt": ["sgd"]}},
        {"name": "x", "type": "float", "min": 0.0, "max": 1.0},
    ]
    result, _ = run_local(doc, tmp_path)

    assert result.phase == "Succeeded"
    assert {r.parameters["opt"] for r in result.records} == {"sgd", "adam"}
    for record in result.records:
        params = dict(record.parameters)
        dump = json.loads((out / f"{record.name}.env.json").read_text())
        assert json.loads(dump["env"]["TRIALFORGE_PARAMS"]) == params
        if params["opt"] == "sgd":
            assert sorted(params) == ["m", "opt", "x"]
            assert dump["argv"][-1] == f"--tag={params['m']!r}"
        else:
            assert sorted(params) == ["opt", "x"]  # m is inactive: absent, and '' in argv
            assert dump["argv"][-1] == "--tag="


def test_a_latency_constraint_keeps_the_best_trial_feasible(tmp_path: Path) -> None:
    """tiny.py reports latency_ms = 100 x; its loss is lowest at x = 0.3 (30 ms), past the
    20 ms bound, so the best trial is the best one at x <= 0.2."""
    out = tmp_path / "out"
    doc = experiment(
        out, "--latency", max_trials=10, parallelism=2,
        constraints=[{"metric": "latency_ms", "max": 20}],
    )  # fmt: skip
    result, rd = run_local(doc, tmp_path)

    assert result.phase == "Succeeded"
    records = result.records
    for record in records:
        x = record.parameters["x"]
        assert record.constraints == {"latency_ms": pytest.approx(100 * x)}
        assert record.feasible is (100 * x <= 20)
    feasible = [r for r in records if r.feasible]
    infeasible = [r for r in records if not r.feasible]
    assert feasible and infeasible
    # The journal keeps feasibility: a record read back is the record written.
    on_disk = journal_record(rd, infeasible[0].name)
    assert on_disk["feasible"] is False and on_disk["constraints"]["latency_ms"] > 20
    status = ExperimentStatus.model_validate(status_of(rd.load_state()))
    assert status.trials.infeasible == len(infeasible)
    assert status.best is not None
    best = min(feasible, key=lambda r: r.values[0])
    assert status.best.trial == best.name
    assert min(r.values[0] for r in infeasible) < best.values[0]  # it was not the best loss


def test_initial_points_are_the_first_trials_a_run_starts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    doc = experiment(
        out, max_trials=4, parallelism=1, initialPoints=[{"x": 0.9}, {"x": 0.3}],
    )  # fmt: skip
    result, _ = run_local(doc, tmp_path)
    assert result.phase == "Succeeded"
    xs = [r.parameters["x"] for r in sorted(result.records, key=lambda r: r.index)]
    assert xs[:2] == [0.9, 0.3]
    assert len(set(xs)) == 4
    assert result.plan is not None and result.plan.best is not None
    assert result.plan.best.parameters["x"] == 0.3  # tiny's loss is lowest there


def test_a_warm_start_from_an_earlier_run_directory_is_told_and_resumes_the_same(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    earlier = experiment(out, name="old", max_trials=6, parallelism=2)
    earlier["spec"]["parameters"].append({"name": "gone", "type": "int", "min": 1, "max": 3})
    first, _ = run_local(earlier, tmp_path)  # into tmp_path/run
    assert first.phase == "Succeeded"

    def warm_run(run_dir: str, max_trials: int) -> RunResult:
        doc = experiment(
            out, name="new", max_trials=max_trials, parallelism=1,
            search={"algorithm": "tpe", "seed": 5, "settings": {"nStartupTrials": 2}},
            warmStart={"runDir": "run"},
        )  # fmt: skip
        runner = LocalRunner(load_experiment(doc), tmp_path / run_dir, tmp_path, stop_grace=0.5)
        return runner.run()

    straight = warm_run("straight", 5)
    assert straight.phase == "Succeeded"
    assert {r.warm_start for r in straight.records} == {
        "runDir run: 6 trials, dropped parameters gone"
    }
    events = [e for e in RunDirectory(tmp_path / "straight").events() if e["event"] == "WarmStart"]
    assert any("dropped parameters gone (not in this space)" in e["message"] for e in events)
    # Three trials, then the budget raised to five: a resume tells the same warm trials
    # (only those that ended before the run began) and suggests what a straight run did.
    warm_run("resumed", 3)
    resumed = warm_run("resumed", 5)
    assert resumed.phase == "Succeeded"

    def xs(result: RunResult) -> list[float]:
        return [r.parameters["x"] for r in sorted(result.records, key=lambda r: r.index)]

    assert xs(resumed) == xs(straight)
    cold = experiment(
        out, name="new", max_trials=5, parallelism=1,
        search={"algorithm": "tpe", "seed": 5, "settings": {"nStartupTrials": 2}},
    )  # fmt: skip
    cold_result = LocalRunner(load_experiment(cold), tmp_path / "cold", tmp_path).run()
    assert xs(cold_result) != xs(straight)  # the told trials changed the suggestions


# --- disruptions (issue 22): a trainer stopped from outside runs again --------------------


def _run_in_thread(doc: dict[str, Any], tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    import threading

    box: dict[str, Any] = {}
    runner = LocalRunner(load_experiment(doc), tmp_path / "run", tmp_path, stop_grace=STOP_GRACE)
    box["runner"] = runner
    thread = threading.Thread(target=lambda: box.setdefault("result", runner.run()), daemon=True)
    thread.start()
    return thread, box


def _starts(out: Path, trial: str) -> list[int]:
    return [int(e[2]) for e in trainer_events(out) if e[0] == "start" and e[1] == trial]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_trainer_stopped_from_outside_is_disrupted_and_runs_again(
    tmp_path: Path, sig: signal.Signals
) -> None:
    out = tmp_path / "out"
    doc = experiment(
        out, "--steps", "3", "--sleep", "0.02", "--gate-from", "0",
        budget={"maxTrials": 1, "parallelism": 1, "maxFailedTrials": 0},
    )  # fmt: skip
    thread, box = _run_in_thread(doc, tmp_path)
    wait_for(lambda: len(_starts(out, "tiny-0")) == 1, 30, "the first run")
    wait_for(lambda: (tmp_path / "run" / "trials" / "tiny-0.log").exists(), 30, "its log")
    time.sleep(0.2)  # a few steps reported
    os.kill(_starts(out, "tiny-0")[0], sig)
    wait_for(lambda: len(_starts(out, "tiny-0")) == 2, 30, "the trial to run again")
    (out / "gate").touch()
    thread.join(60)
    result = box["result"]
    assert result.phase == "Succeeded", result.message
    (record,) = result.records
    # The same trial (same name, attempt, parameters), counted apart, never as a failure.
    assert (record.name, record.attempt, record.phase) == ("tiny-0", 0, "Succeeded")
    assert record.disruptions == 1
    assert record.disruption_history[0]["reason"] == "Interrupted"
    assert sig.name in record.disruption_history[0]["message"]
    assert result.plan.counts["failed"] == 0 and result.plan.counts["disruptions"] == 1
    rd = RunDirectory(tmp_path / "run")
    steps = [o.step for o in rd.load_observations("tiny-0")]
    assert steps == sorted(set(steps)) and steps[0] == 0  # complete, no step repeated
    events = [e["event"] for e in rd.events()]
    assert "TrialDisrupted" in events and "TrialFailed" not in events
    assert state_trials(rd)["disruptions"] == 1


def state_trials(rd: RunDirectory) -> dict[str, Any]:
    return rd.load_state()["trials"]


def test_a_trainer_killed_with_sigkill_fails_as_the_oom_killer_would(tmp_path: Path) -> None:
    out = tmp_path / "out"
    doc = experiment(out, "--gate-from", "0", "--sleep", "0.02")
    thread, box = _run_in_thread(doc, tmp_path)
    wait_for(lambda: len(_starts(out, "tiny-0")) == 1, 30, "the first run")
    os.kill(_starts(out, "tiny-0")[0], signal.SIGKILL)
    thread.join(60)
    (record,) = box["result"].records
    assert record.phase == "Failed" and record.disruptions == 0
    assert record.exit_code == -signal.SIGKILL


def test_a_trial_disrupted_more_than_max_disruptions_fails(tmp_path: Path) -> None:
    out = tmp_path / "out"
    doc = experiment(out, "--gate-from", "0", "--sleep", "0.02", trial={"maxDisruptions": 0})
    thread, box = _run_in_thread(doc, tmp_path)
    wait_for(lambda: len(_starts(out, "tiny-0")) == 1, 30, "the first run")
    os.kill(_starts(out, "tiny-0")[0], signal.SIGTERM)
    thread.join(60)
    result = box["result"]
    (record,) = result.records
    assert (record.phase, record.reason, record.disruptions) == ("Failed", "TooManyDisruptions", 1)
    assert len(_starts(out, "tiny-0")) == 1  # not run again
    assert result.phase == "Failed"


def test_a_disrupted_trial_resumes_from_its_checkpoint_and_repeats_no_step(tmp_path: Path) -> None:
    out = tmp_path / "out"
    doc = experiment(
        out, "--steps", "4", "--sleep", "0.05", "--gate-from", "0", "--checkpoint",
        budget={"maxTrials": 1, "parallelism": 1, "maxFailedTrials": 0},
    )  # fmt: skip
    thread, box = _run_in_thread(doc, tmp_path)
    wait_for(lambda: len(_starts(out, "tiny-0")) == 1, 30, "the first run")
    checkpoints = tmp_path / "run" / "checkpoints" / "tiny-0"
    wait_for(lambda: (checkpoints / "state.json").exists(), 30, "a first checkpoint")
    time.sleep(0.3)
    os.kill(_starts(out, "tiny-0")[0], signal.SIGTERM)  # the trainer saves and exits 143
    wait_for(lambda: len(_starts(out, "tiny-0")) == 2, 30, "the trial to run again")
    (out / "gate").touch()
    thread.join(60)
    result = box["result"]
    assert result.phase == "Succeeded", result.message
    (record,) = result.records
    assert (record.phase, record.attempt, record.disruptions) == ("Succeeded", 0, 1)
    resumes = [int(e[2]) for e in trainer_events(out) if e[0] == "resume"]
    assert resumes[0] == 0 and resumes[1] > 0, resumes  # the second run began past step 0
    steps = [o.step for o in RunDirectory(tmp_path / "run").load_observations("tiny-0")]
    assert steps == list(range(len(steps))), steps  # complete, in order, none repeated
    assert record.checkpoint_step == steps[-1]
    env_dir = json.loads((checkpoints / "state.json").read_text())
    assert env_dir["step"] == steps[-1]


def test_the_checkpointing_digits_example_resumes_after_a_disruption(tmp_path: Path) -> None:
    """examples/trainers/digits_checkpoint.py (docs/checkpoints.md): stopped by SIGTERM
    mid-training, it saves, runs again, resumes from its epoch and repeats none."""
    repo = Path(__file__).resolve().parents[2]
    doc = yaml.safe_load((repo / "examples" / "digits-checkpoint.yaml").read_text())
    doc["spec"]["budget"] = {"maxTrials": 1, "parallelism": 1, "maxFailedTrials": 0}
    container = doc["spec"]["trial"]["template"]["spec"]["containers"][0]
    container["command"] = [
        "python", str(repo / "examples" / "trainers" / "digits_checkpoint.py"),
        "--lr=${params.lr}", "--hidden=${params.hidden}", "--epochs=12", "--epoch-pause=0.3",
    ]  # fmt: skip
    thread, box = _run_in_thread(doc, tmp_path)
    run = tmp_path / "run"
    log = run / "trials" / "digits-ckpt-0.log"

    def epochs_done() -> int:
        lines = log.read_text().splitlines() if log.exists() else []
        return sum(1 for line in lines if line.startswith("{"))

    wait_for(lambda: epochs_done() >= 3, 60, "three epochs")
    process = box["runner"].processes["digits-ckpt-0"]
    os.kill(process._proc.pid, signal.SIGTERM)
    thread.join(120)
    result = box["result"]
    assert result.phase == "Succeeded", result.message
    (record,) = result.records
    assert (record.disruptions, record.attempt, record.checkpoint_step) == (1, 0, 12)
    assert "resuming after epoch" in log.read_text()  # the second run's output
    steps = [o.step for o in RunDirectory(run).load_observations("digits-ckpt-0")]
    assert steps == list(range(1, 13))
    assert (run / "checkpoints" / "digits-ckpt-0" / "checkpoint.pkl").exists()
