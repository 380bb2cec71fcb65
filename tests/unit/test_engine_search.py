"""engine/search.py: seeded suggestions, the same on a rebuilt search."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import World, experiment_doc, succeed_scored
from trialforge.api import load_experiment
from trialforge.api.experiment import ExperimentSpec
from trialforge.engine import plugins
from trialforge.engine.planner import Planner


def spec_of(**overrides: Any) -> ExperimentSpec:
    return load_experiment(experiment_doc(**overrides)).spec


ALGORITHMS = ["random", "tpe", "cmaes", "qmc", "nsga2"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_seeded_runs_are_deterministic(algorithm: str) -> None:
    spec = spec_of(
        search={"algorithm": algorithm, "seed": 3}, budget={"maxTrials": 12, "parallelism": 3}
    )
    a, b = World(Planner(spec, "x")), World(Planner(spec, "x"))
    a.run(succeed_scored)
    b.run(succeed_scored)
    assert a.suggested == b.suggested
    assert len({repr(p) for _, _, p in a.suggested}) == 12


def test_different_seeds_suggest_differently() -> None:
    one = World(Planner(spec_of(search={"algorithm": "tpe", "seed": 1}), "x"))
    two = World(Planner(spec_of(search={"algorithm": "tpe", "seed": 2}), "x"))
    one.run(succeed_scored)
    two.run(succeed_scored)
    assert one.suggested != two.suggested


@pytest.mark.parametrize("algorithm", [*ALGORITHMS, "grid"])
def test_a_reseeded_sampler_suggests_what_a_fresh_one_would(
    algorithm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reusing one sampler (re-seeded per suggestion) is only a speed-up, never a change."""
    overrides: dict[str, Any] = {
        "search": {"algorithm": algorithm, "seed": 11},
        "budget": {"maxTrials": 14, "parallelism": 2},
    }
    if algorithm in ("grid", "cmaes"):
        lr: dict[str, Any] = (
            {"name": "lr", "type": "discrete", "values": [0.001, 0.01, 0.1]}
            if algorithm == "grid"
            else {"name": "lr", "type": "float", "min": 1e-4, "max": 1e-1, "log": True}
        )
        overrides["parameters"] = [lr, {"name": "layers", "type": "int", "min": 1, "max": 5}]
        overrides["trial"] = {
            "template": {
                "spec": {"containers": [{"name": "t", "image": "i", "command": ["train"]}]}
            }
        }
    spec = spec_of(**overrides)
    reused = World(Planner(spec, "x"))
    reused.run(succeed_scored)
    assert plugins.SAMPLERS[algorithm].reusable
    # The same experiment with every suggestion made by a freshly built sampler.
    monkeypatch.setattr(plugins, "reseed", lambda sampler, seed: False)
    fresh = World(Planner(spec, "x"))
    fresh.run(succeed_scored)
    assert reused.suggested == fresh.suggested
    assert len(reused.suggested) == 14


def test_the_size_counted_is_the_studys_through_restores_gaps_and_suggestions() -> None:
    """Search.size is counted as trials are added (the storage copies its list to say),
    and stays what the study holds."""
    from trialforge.engine.search import Search

    spec = load_experiment(experiment_doc(search={"algorithm": "random", "seed": 2})).spec
    search = Search(spec, "demo")
    assert search.size == len(search.study.trials) == 0
    search.suggest(0)
    search.restore(3, {"lr": 0.01, "opt": "adam", "layers": 2}, None)  # 1 and 2: a gap
    search.restore(1, {"lr": 0.01, "opt": "adam", "layers": 2}, None)  # known: nothing added
    search.suggest(4)
    assert search.size == len(search.study.trials) == 5


# -- conditional spaces ------------------------------------------------------------------

CONDITIONAL = [
    {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
    {"name": "momentum", "type": "float", "min": 0.0, "max": 0.99, "when": {"opt": ["sgd"]}},
    {"name": "nesterov", "type": "categorical", "values": [True, False], "when": {"opt": ["sgd"]}},
    {"name": "beta", "type": "discrete", "values": [0.9, 0.99], "when": {"opt": ["adam"]}},
    {"name": "lr", "type": "float", "min": 1e-4, "max": 1e-1, "log": True},
]
PLAIN_TRIAL = {
    "template": {"spec": {"containers": [{"name": "t", "image": "i", "command": ["t"]}]}}
}


def active_of(parameters: dict[str, Any]) -> list[str]:
    sgd = ["opt", "momentum", "nesterov", "lr"]
    return sgd if parameters["opt"] == "sgd" else ["opt", "beta", "lr"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_conditional_space_suggests_only_active_parameters(algorithm: str) -> None:
    spec = spec_of(
        parameters=CONDITIONAL,
        trial=PLAIN_TRIAL,
        search={"algorithm": algorithm, "seed": 5},
        budget={"maxTrials": 16, "parallelism": 2},
    )
    world = World(Planner(spec, "x"))
    world.run(succeed_scored)
    suggested = [p for _, _, p in world.suggested]
    assert len(suggested) == 16
    for parameters in suggested:
        assert sorted(parameters) == sorted(active_of(parameters)), parameters
    # Both branches are explored.
    assert {p["opt"] for p in suggested} == {"sgd", "adam"}


def test_tpe_samples_a_conditional_space_grouped() -> None:
    spec = spec_of(parameters=CONDITIONAL, trial=PLAIN_TRIAL, search={"algorithm": "tpe"})
    sampler = Planner(spec, "x").search._sampler
    assert sampler._group is True  # type: ignore[attr-defined]
    flat = Planner(spec_of(search={"algorithm": "tpe"}), "x").search._sampler
    assert flat._group is False  # type: ignore[attr-defined]


@pytest.mark.parametrize("algorithm", ["tpe", "random", "grid"])
def test_a_conditional_search_restarted_mid_run_suggests_the_same(algorithm: str) -> None:
    parameters = CONDITIONAL
    if algorithm == "grid":
        parameters = [
            {"name": "momentum", "type": "discrete", "values": [0.0, 0.9], "when": p["when"]}
            if p["name"] == "momentum"
            else p
            for p in CONDITIONAL
            if p["name"] != "lr"
        ]
    spec = spec_of(
        parameters=parameters,
        trial=PLAIN_TRIAL,
        search={"algorithm": algorithm, "seed": 9},
        budget={"maxTrials": 6, "parallelism": 2},
    )
    straight = World(Planner(spec, "x"))
    straight.run(succeed_scored)
    first = World(Planner(spec, "x"))
    for _ in range(4):
        first.step(succeed_scored)
    # A new process: a fresh planner over the trials recorded so far.
    second = World(Planner(spec, "x"), list(first.views.values()))
    second.started = list(first.started)
    second.run(succeed_scored)
    assert second.suggested == straight.suggested


def test_a_conditional_grid_enumerates_only_valid_configurations() -> None:
    parameters = [
        {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
        {"name": "momentum", "type": "discrete", "values": [0.5, 0.9], "when": {"opt": ["sgd"]}},
        {"name": "layers", "type": "int", "min": 1, "max": 3},
    ]
    spec = spec_of(
        parameters=parameters,
        trial=PLAIN_TRIAL,
        search={"algorithm": "grid", "seed": 1},
        budget={"maxTrials": 50, "parallelism": 2},
    )
    planner = Planner(spec, "x")
    assert planner.search.capacity() == 9  # adam x 3 layers + sgd x 2 momenta x 3 layers
    world = World(planner)
    plan = world.run(succeed_scored)
    assert plan.finished.reason == "SearchSpaceExhausted"
    points = {tuple(sorted(p.items())) for _, _, p in world.suggested}
    assert len(points) == len(world.suggested) == 9
    assert all(("momentum" in dict(p)) == (dict(p)["opt"] == "sgd") for p in points)


# -- constraints ----------------------------------------------------------------------------


def constrained_end(view: Any) -> Any:
    """Succeeded with score(), and latency 8 ms a layer (feasible up to 12: one layer)."""
    from dataclasses import replace

    from tests.factories import score

    latency = 8.0 * view.parameters["layers"]
    return replace(
        view, phase="Succeeded", values=(score(dict(view.parameters)),),
        constraints={"latency_ms": latency}, feasible=latency <= 12,
    )  # fmt: skip


@pytest.mark.parametrize("algorithm", ["tpe", "nsga2", "random"])
def test_the_study_is_told_each_trials_violations(algorithm: str) -> None:
    """Where Optuna's constraint-aware samplers (TPE, NSGA-II, GP) read them; Optuna's own
    best trial, which respects them, is the planner's best."""
    spec = spec_of(
        constraints=[{"metric": "latency_ms", "max": 12}],
        search={"algorithm": algorithm, "seed": 2},
        budget={"maxTrials": 8, "parallelism": 2},
    )
    planner = Planner(spec, "x")
    plan = World(planner).run(constrained_end)
    trials = planner.search.study.get_trials()
    for t in trials:
        (violation,) = t.system_attrs["constraints"]
        assert violation == 8.0 * t.params["layers"] - 12
    assert any(t.params["layers"] > 1 for t in trials)
    assert plan.best is not None
    assert planner.search.study.best_trial.number == plan.best.index
    assert planner.search.study.best_trial.params["layers"] == 1


def test_a_constrained_search_restarted_mid_run_suggests_the_same() -> None:
    spec = spec_of(
        constraints=[{"metric": "latency_ms", "max": 12}],
        search={"algorithm": "tpe", "seed": 6, "settings": {"nStartupTrials": 3}},
        budget={"maxTrials": 10, "parallelism": 2},
    )
    straight = World(Planner(spec, "x"))
    straight.run(constrained_end)
    first = World(Planner(spec, "x"))
    for _ in range(7):
        first.step(constrained_end)
    second = World(Planner(spec, "x"), list(first.views.values()))
    second.started = list(first.started)
    second.run(constrained_end)
    assert second.suggested == straight.suggested


# -- initial points ---------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["tpe", "random", "qmc", "grid"])
def test_initial_points_run_first_in_order(algorithm: str) -> None:
    points = [{"opt": "sgd", "layers": 3}, {"opt": "adam"}]
    parameters: Any = None
    trial: Any = None
    if algorithm == "grid":
        parameters = [
            {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
            {"name": "layers", "type": "int", "min": 1, "max": 4},
        ]
        trial = PLAIN_TRIAL
        points = [{"opt": "sgd", "layers": 3}, {"opt": "adam", "layers": 1}]
    spec = spec_of(
        initialPoints=points,
        search={"algorithm": algorithm, "seed": 8},
        budget={"maxTrials": 8, "parallelism": 3},
        **({"parameters": parameters, "trial": trial} if parameters else {}),
    )
    world = World(Planner(spec, "x"))
    world.run(succeed_scored)
    suggested = [p for _, _, p in world.suggested]
    assert len(suggested) == 8
    for point, got in zip(points, suggested, strict=False):
        assert {k: got[k] for k in point} == point  # the rest is the sampler's
        assert sorted(got) == (
            ["layers", "opt"] if algorithm == "grid" else ["layers", "lr", "opt"]
        )
    if algorithm == "grid":  # the grid still visits every point once
        assert len({tuple(sorted(p.items())) for p in suggested}) == 8


def test_a_search_with_initial_points_restarted_mid_run_suggests_the_same() -> None:
    spec = spec_of(
        initialPoints=[{"lr": 0.001}, {"lr": 0.05, "opt": "sgd", "layers": 1}],
        search={"algorithm": "tpe", "seed": 2, "settings": {"nStartupTrials": 3}},
        budget={"maxTrials": 8, "parallelism": 2},
    )
    straight = World(Planner(spec, "x"))
    straight.run(succeed_scored)
    first = World(Planner(spec, "x"))
    first.step(succeed_scored)
    second = World(Planner(spec, "x"), list(first.views.values()))
    second.started = list(first.started)
    second.run(succeed_scored)
    assert second.suggested == straight.suggested
    assert straight.suggested[0][2]["lr"] == 0.001
