"""The Argo CD health check for Experiments (docs/argocd/experiment-health.lua), run with lupa.

Argo CD runs health checks with gopher-lua (Lua 5.1) and only the base, string,
table and math libraries; the script runs here under Lua 5.1 and 5.4 with the
other libraries removed. The sample objects are built from the operator's own
pydantic status models, so a renamed phase or field fails here.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from trialforge.api.status import (
    BestTrial,
    Condition,
    ExperimentPhase,
    ExperimentStatus,
    TrialCounts,
)

REPO = Path(__file__).resolve().parents[2]
HEALTH = REPO / "docs" / "argocd" / "experiment-health.lua"
LUA_VERSIONS = ["lupa.lua51", "lupa.lua54"]


def run_health(obj: dict[str, Any], version: str = "lupa.lua51") -> dict[str, str]:
    lupa = importlib.import_module(version)
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    # Argo CD's VM has no io/os/package/debug: the script must not need them.
    for lib in ("io", "os", "package", "debug", "require", "dofile", "loadfile"):
        lua.execute(f"{lib} = nil")
    lua.globals().obj = lua.table_from(obj, recursive=True)
    fn = lua.execute(f"return function() {HEALTH.read_text()}\nend")
    result = fn()
    return {"status": result["status"], "message": result["message"]}


def experiment(status: ExperimentStatus | None, generation: int = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "trialforge.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": "mnist", "namespace": "ml", "generation": generation},
        "spec": {"objective": {"metric": "loss", "direction": "minimize"}},
    }
    if status is not None:
        obj["status"] = status.to_wire()
    return obj


def status(phase: str, **kw: Any) -> ExperimentStatus:
    kw.setdefault("observed_generation", 1)
    return ExperimentStatus(phase=phase, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", LUA_VERSIONS)
@pytest.mark.parametrize(
    ("phase", "health"),
    [
        ("Succeeded", "Healthy"),
        ("Failed", "Degraded"),
        ("Running", "Progressing"),
        ("Pending", "Progressing"),
        ("Suspended", "Suspended"),
    ],
)
def test_phase_to_health(phase: str, health: str, version: str) -> None:
    counts = TrialCounts(running=2, pending=1, succeeded=5, failed=1, total=9)
    st = status(
        phase,
        message=f"the experiment is {phase.lower()}",
        trials=counts,
        best=BestTrial(trial="mnist-0004", parameters={"lr": 0.01}, value=0.0123),
        best_value=0.0123,
    )
    hs = run_health(experiment(st), version)
    assert hs["status"] == health
    assert f"the experiment is {phase.lower()}" in hs["message"]
    assert "2 running, 1 pending, 6 done (1 failed)" in hs["message"]
    assert "best mnist-0004 = 0.0123" in hs["message"]


def test_every_experiment_phase_has_a_known_health() -> None:
    for phase in ExperimentPhase:
        assert run_health(experiment(status(phase)))["status"] in (
            "Healthy",
            "Progressing",
            "Suspended",
            "Degraded",
        ), phase


@pytest.mark.parametrize("version", LUA_VERSIONS)
def test_no_status_yet_is_progressing(version: str) -> None:
    hs = run_health(experiment(None), version)
    assert hs == {"status": "Progressing", "message": "Waiting for the Trialforge operator"}


def test_minimal_status_without_counts() -> None:
    obj = experiment(None)
    obj["status"] = {"phase": "Running"}
    assert run_health(obj)["status"] == "Progressing"


@pytest.mark.parametrize("version", LUA_VERSIONS)
def test_unobserved_generation_is_progressing_even_if_succeeded(version: str) -> None:
    # The spec changed (say, a larger budget) and the operator has not looked yet.
    hs = run_health(experiment(status("Succeeded", observed_generation=2), generation=3), version)
    assert hs["status"] == "Progressing"
    assert "generation 3" in hs["message"]


@pytest.mark.parametrize("version", LUA_VERSIONS)
def test_invalid_spec_is_degraded(version: str) -> None:
    bad = Condition(
        type="SpecValid",
        status="False",
        reason="InvalidSpec",
        message="spec.budget.parallelism: parallelism (8) is more than maxTrials (4)",
    )
    ok = Condition(type="Running", status="True", reason="TrialsRunning")
    st = status("Running", conditions=[ok, bad], observed_generation=2)
    hs = run_health(experiment(st, generation=2), version)
    assert hs["status"] == "Degraded"
    assert "parallelism (8)" in hs["message"]
    # ...and a valid spec with the same conditions otherwise is not.
    good = Condition(type="SpecValid", status="True", reason="Valid")
    st = status("Running", conditions=[ok, good], observed_generation=2)
    assert run_health(experiment(st, generation=2), version)["status"] == "Progressing"


def test_unknown_phase_is_unknown() -> None:
    obj = experiment(None)
    obj["status"] = {"phase": "Exploded"}
    assert run_health(obj)["status"] == "Unknown"


def test_argocd_applications_are_well_formed() -> None:
    for name in ("trialforge-app.yaml", "experiments-app.yaml"):
        app = yaml.safe_load((REPO / "docs" / "argocd" / name).read_text())
        assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
        assert {"source", "destination", "project", "syncPolicy"} <= set(app["spec"])
    chart = yaml.safe_load((REPO / "docs" / "argocd" / "trialforge-app.yaml").read_text())
    assert (REPO / chart["spec"]["source"]["path"] / "Chart.yaml").is_file()
    xps = yaml.safe_load((REPO / "docs" / "argocd" / "experiments-app.yaml").read_text())
    assert xps["spec"]["syncPolicy"]["automated"]["prune"] is False  # results are owned
    assert {"group": "trialforge.io", "kind": "Experiment", "jsonPointers": ["/status"]} in xps[
        "spec"
    ]["ignoreDifferences"]
