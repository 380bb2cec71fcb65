"""reporting/inventory.py: experiments as `trialforge list` and `status` see them (local)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_local_runner import experiment, run_local
from trialforge.local.rundir import RunDirectory
from trialforge.reporting.inventory import (
    DESCRIPTION_ANNOTATION,
    NotFound,
    filter_summaries,
    find_run_dir,
    local_detail,
    local_runs,
    local_summary,
    matches,
    parse_selector,
)

OLD = Path(__file__).parents[1] / "data" / "run-directories"


def test_selectors_follow_kubectls_syntax() -> None:
    labels = {"team": "vision", "env": "dev"}
    cases = {
        "team=vision": True,
        "team==vision": True,
        "team=nlp": False,
        "team!=nlp": True,
        "env": True,
        "!env": False,
        "!gpu": True,
        "gpu": False,
        "team in (nlp, vision)": True,
        "team notin (nlp,vision)": False,
        "team=vision,env!=prod": True,
        "team=vision,env=prod": False,
        "missing!=x": True,
    }
    for text, expected in cases.items():
        assert matches(labels, parse_selector(text)) is expected, text


@pytest.mark.parametrize("bad", ["team=vision,(", "=x", "!team=x", "a b"])
def test_a_bad_selector_is_named(bad: str) -> None:
    with pytest.raises(ValueError, match="label selector"):
        parse_selector(bad)


def test_runs_are_listed_with_progress_best_labels_and_description(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for name, labels, trials in (("alpha", {"team": "vision"}, 2), ("beta", {"team": "nlp"}, 3)):
        doc = experiment(tmp_path / name, name=name, max_trials=trials)
        doc["metadata"]["labels"] = labels
        doc["metadata"]["annotations"] = {DESCRIPTION_ANNOTATION: f"the {name} sweep"}
        (tmp_path / name).mkdir()
        run_local(doc, tmp_path / name)
        root.mkdir(exist_ok=True)
        shutil.move(tmp_path / name / "run", root / name)
    found = local_runs(root)
    assert [(s.name, s.phase, s.done, s.max) for s in found] == [
        ("alpha", "Succeeded", 2, 2),
        ("beta", "Succeeded", 3, 3),
    ]
    alpha = found[0]
    assert alpha.labels == {"team": "vision"} and alpha.description == "the alpha sweep"
    state = RunDirectory(root / "alpha").load_state()
    assert alpha.best == state["bestValue"] and alpha.best_trial == state["best"]["trial"]
    assert alpha.live is None  # it ended: no process to ask about
    assert [s.name for s in filter_summaries(found, "team=nlp")] == ["beta"]
    assert [s.name for s in filter_summaries(found, None, ["succeeded"])] == ["alpha", "beta"]
    assert filter_summaries(found, None, ["Running"]) == []
    assert find_run_dir("beta", root) == root / "beta"
    assert find_run_dir(str(root / "alpha"), tmp_path) == root / "alpha"
    with pytest.raises(NotFound, match="no run directory 'gamma'"):
        find_run_dir("gamma", root)


def test_a_missing_folder_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such folder"):
        local_runs(tmp_path / "nothing")
    with pytest.raises(NotFound, match="not a run directory"):
        local_summary(tmp_path)


def test_a_run_whose_process_died_is_stale_and_status_says_how_to_resume(tmp_path: Path) -> None:
    shutil.copytree(OLD / "v1", tmp_path / "run")
    rd = RunDirectory(tmp_path / "run")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is free now (reused only after the kernel wraps around)
    state = rd.load_state()
    state.update(phase="Running", formatVersion=2, pid=dead.pid, host=socket.gethostname())
    rd.save_state(state)
    summary = local_summary(rd.root)
    assert summary.live is False and summary.shown_phase == "Running (stale)"
    detail = local_detail(rd.root)
    assert "the process that ran it is gone" in detail.holds[0]
    state["pid"] = os.getpid()  # this process: alive
    rd.save_state(state)
    assert local_summary(rd.root).live is True


def test_a_format_1_directory_is_listed_and_detailed(tmp_path: Path) -> None:
    shutil.copytree(OLD / "v1", tmp_path / "runs" / "format-one")
    [summary] = local_runs(tmp_path / "runs")
    assert (summary.name, summary.phase, summary.done, summary.max) == (
        "format-one",
        "Succeeded",
        3,
        3,
    )
    assert summary.labels == {"team": "vision"}
    detail = local_detail(tmp_path / "runs" / "format-one")
    assert [t["name"] for t in detail.trials] == [f"format-one-{i}" for i in range(3)]
    assert detail.counts["succeeded"] == 3 and detail.holds == []
    doc = detail.to_json(now=0.0)
    json.dumps(doc)  # JSON-ready
    assert doc["phase"] == "Succeeded" and doc["bestTrial"]["trial"] == summary.best_trial


def test_an_unreadable_run_directory_is_listed_as_such(tmp_path: Path) -> None:
    shutil.copytree(OLD / "v1", tmp_path / "runs" / "newer")
    rd = RunDirectory(tmp_path / "runs" / "newer")
    state = json.loads((rd.root / "state.json").read_text())
    rd.save_state({**state, "formatVersion": 9})
    [summary] = local_runs(tmp_path / "runs")
    assert summary.phase == "Unknown" and "formatVersion 9 is newer" in (summary.reason or "")


def test_a_pending_pods_reasons_are_what_holds_its_trial_back() -> None:
    from trialforge.reporting.inventory import _pod_holds

    pod = {
        "metadata": {"name": "xp-0-abcde"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."}
            ],
            "containerStatuses": [
                {"name": "trainer", "state": {"waiting": {"reason": "ImagePullBackOff",
                                                          "message": "Back-off pulling image"}}},
                {"name": "other", "state": {"waiting": {"reason": "ContainerCreating"}}},
            ],
        },
    }  # fmt: skip
    assert _pod_holds("xp-0", [pod]) == [
        "xp-0: pod xp-0-abcde Unschedulable: 0/4 nodes are available: "
        "4 Insufficient nvidia.com/gpu.",
        "xp-0: container trainer ImagePullBackOff: Back-off pulling image",
    ]
    running = {"metadata": {"name": "p"}, "status": {"phase": "Running"}}
    assert _pod_holds("xp-0", [running]) == []
