"""reporting/inspect_commands.py: `trialforge list`, `status` and `logs` as a person runs them
(real runs of tiny.py; the cluster paths are in tests/cluster/test_inspect.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.unit.test_local_runner import cli, experiment, write_yaml
from trialforge.reporting.inspect_commands import EXIT_NOT_FOUND, EXIT_USAGE, columns


def run_two(tmp_path: Path) -> Path:
    """Two finished runs under tmp_path/runs: alpha (labelled team=vision) and beta."""
    runs = tmp_path / "runs"
    for name, labels in (("alpha", {"team": "vision"}), ("beta", {"team": "nlp", "gpu": "h200"})):
        doc = experiment(tmp_path / f"out-{name}", name=name, max_trials=2)
        doc["metadata"]["labels"] = labels
        doc["metadata"]["annotations"] = {"trialforge.io/description": f"{name} sweep"}
        spec = write_yaml(tmp_path / f"{name}.yaml", doc)
        done = cli("run", str(spec), "--dir", str(runs / name), "--quiet")
        assert done.returncode == 0, done.stderr
    return runs


def test_list_shows_each_run_and_filters_by_label_and_phase(tmp_path: Path) -> None:
    runs = run_two(tmp_path)
    done = cli("list", "--dir", str(runs))
    assert done.returncode == 0, done.stderr
    head, *rows = done.stdout.splitlines()
    assert head.split() == ["NAME", "PHASE", "PROGRESS", "BEST", "AGE", "LABELS", "DESCRIPTION"]
    assert [r.split()[:3] for r in rows] == [
        ["alpha", "Succeeded", "2/2"],
        ["beta", "Succeeded", "2/2"],
    ]
    assert "gpu=h200,team=nlp" in rows[1] and "beta sweep" in rows[1]

    picked = cli("list", "--dir", str(runs), "-l", "team=nlp", "--json")
    assert picked.returncode == 0 and picked.stderr == ""
    doc = json.loads(picked.stdout)  # only JSON on stdout
    assert [e["name"] for e in doc["experiments"]] == ["beta"]
    assert doc["experiments"][0]["labels"] == {"team": "nlp", "gpu": "h200"}
    assert doc["experiments"][0]["description"] == "beta sweep"

    none = cli("list", "--dir", str(runs), "--phase", "Running,Failed", "-o", "yaml")
    assert yaml.safe_load(none.stdout) == {"experiments": []}
    assert cli("list", "--dir", str(runs), "-l", "gpu").stdout.count("\n") == 2  # head + beta


def test_status_json_and_text_name_counts_best_and_conditions(tmp_path: Path) -> None:
    runs = run_two(tmp_path)
    done = cli("status", "alpha", "--dir", str(runs), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    state = json.loads((runs / "alpha" / "state.json").read_text())
    assert doc["counts"] == state["trials"] and doc["bestTrial"] == state["best"]
    assert {c["type"] for c in doc["conditions"]} >= {"SpecValid", "Succeeded"}
    assert [t["name"] for t in doc["trials"]] == ["alpha-0", "alpha-1"] and doc["holds"] == []
    text = cli("status", str(runs / "beta")).stdout
    assert "experiment beta" in text and "best:" in text and "beta sweep" in text
    assert "what holds trials back:\n  nothing" in text


def test_missing_things_are_clear_errors_with_exit_codes(tmp_path: Path) -> None:
    runs = run_two(tmp_path)
    cases = [
        (("status", "gamma", "--dir", str(runs)), EXIT_NOT_FOUND, "no run directory 'gamma'"),
        (("list", "--dir", str(tmp_path / "none")), EXIT_NOT_FOUND, "no such folder"),
        (("logs", "alpha-9", "--dir", str(runs)), EXIT_NOT_FOUND, "no trial 'alpha-9'"),
        (("logs", "alpha-0", "--run-dir", str(tmp_path)), EXIT_NOT_FOUND, "not a run directory"),
        (("list", "--dir", str(runs), "-l", "a b"), EXIT_USAGE, "label selector"),
        (("logs", "alpha-0", "--dir", str(runs), "--tail", "-1"), EXIT_USAGE, "--tail"),
    ]
    for argv, code, message in cases:
        done = cli(*argv)
        assert done.returncode == code, (argv, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, argv
        assert done.stdout == ""


def test_logs_prints_a_local_trials_output_and_its_tail(tmp_path: Path) -> None:
    runs = run_two(tmp_path)
    log = (runs / "alpha" / "trials" / "alpha-1.log").read_text()
    assert log.count("\n") == 3
    assert cli("logs", "alpha-1", "--dir", str(runs)).stdout == log
    assert cli("logs", str(runs / "alpha" / "trials" / "alpha-1.log")).stdout == log
    tail = cli("logs", "alpha-1", "--run-dir", str(runs / "alpha"), "--tail", "1").stdout
    assert tail == log.splitlines(keepends=True)[-1]


def test_logs_follow_prints_a_running_trials_output_until_it_ends(tmp_path: Path) -> None:
    out = tmp_path / "out"
    doc = experiment(out, "--gate-from", "0", "--sleep", "0.05", name="gated")
    spec = write_yaml(tmp_path / "gated.yaml", doc)
    run_dir = tmp_path / "runs" / "gated"
    runner = subprocess.Popen(
        [sys.executable, "-m", "trialforge.cli", "run", str(spec), "--dir", str(run_dir), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    follower = None
    try:
        log = run_dir / "trials" / "gated-0.log"
        deadline = time.monotonic() + 60
        while not (log.exists() and log.read_text().count("\n") >= 2):
            assert time.monotonic() < deadline and runner.poll() is None, "the trial never ran"
            time.sleep(0.05)
        errors = open(tmp_path / "follower.err", "w+")  # noqa: SIM115 (closed below)
        follower = subprocess.Popen(
            [sys.executable, "-m", "trialforge.cli", "logs", "gated-0", "-f", "--dir",
             str(tmp_path / "runs")],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )  # fmt: skip
        assert follower.stdout is not None
        first = follower.stdout.readline()
        assert first.startswith('{"step": 0')
        # The trial waits for its gate, so the follower cannot have ended.
        assert follower.poll() is None
        (out / "gate").touch()
        # Read through the same buffered pipe as readline (communicate() reads the raw
        # pipe and would miss what readline had buffered).
        rest = follower.stdout.read()
        follower.wait(timeout=60)
        errors.seek(0)
        err = errors.read()
        errors.close()
        assert follower.returncode == 0, err
        assert runner.wait(timeout=60) == 0, runner.stderr.read() if runner.stderr else ""
        assert first + rest == log.read_text()
        assert (first + rest).count('"step"') >= 3
    finally:
        for proc in (runner, follower):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_columns_align_like_kubectl() -> None:
    assert columns([["A", "BB"], ["ccc", "d"]]) == "A    BB\nccc  d\n"
    assert columns([]) == ""
