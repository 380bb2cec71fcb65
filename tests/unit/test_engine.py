"""The pure engine: search, pruning and the planner's decisions, on scripted worlds."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import replace
from typing import Any

import pytest

from tests.factories import NOW, World, experiment_doc
from trialforge.api import load_experiment
from trialforge.api.experiment import ExperimentSpec
from trialforge.api.observation import Observation
from trialforge.engine import plugins
from trialforge.engine.actions import FinishExperiment, StartTrial, StopTrial
from trialforge.engine.errors import EngineError
from trialforge.engine.objective import conclude
from trialforge.engine.planner import Planner
from trialforge.engine.record import TrialRecord
from trialforge.engine.template import substitute_container, trial_environment


def spec_of(**overrides: Any) -> ExperimentSpec:
    return load_experiment(experiment_doc(**overrides)).spec


def score(params: dict[str, Any]) -> float:
    """A smooth objective the samplers can learn: best near lr=0.01, adam, 2 layers."""
    lr = math.log10(params["lr"]) if "lr" in params else 0.0
    return (
        -((lr + 2) ** 2)
        - (0.5 if params.get("opt") == "sgd" else 0)
        - 0.1 * abs(params.get("layers", 2) - 2)
    )


def succeed(view: TrialRecord) -> TrialRecord:
    return replace(view, phase="Succeeded", values=(score(dict(view.parameters)),))


def fail(view: TrialRecord) -> TrialRecord:
    return replace(view, phase="Failed", reason="Error")


ALGORITHMS = ["random", "tpe", "cmaes", "qmc", "nsga2"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_seeded_runs_are_deterministic(algorithm: str) -> None:
    spec = spec_of(
        search={"algorithm": algorithm, "seed": 3}, budget={"maxTrials": 12, "parallelism": 3}
    )
    a, b = World(Planner(spec, "x")), World(Planner(spec, "x"))
    a.run(succeed)
    b.run(succeed)
    assert a.suggested == b.suggested
    assert len({repr(p) for _, _, p in a.suggested}) == 12


def test_different_seeds_suggest_differently() -> None:
    one = World(Planner(spec_of(search={"algorithm": "tpe", "seed": 1}), "x"))
    two = World(Planner(spec_of(search={"algorithm": "tpe", "seed": 2}), "x"))
    one.run(succeed)
    two.run(succeed)
    assert one.suggested != two.suggested


@pytest.mark.parametrize("algorithm", [*ALGORITHMS, "grid"])
def test_rebuilt_planner_continues_like_an_uninterrupted_one(algorithm: str) -> None:
    """A restarted process rebuilds the study from the trials and suggests the same next."""
    overrides: dict[str, Any] = {
        "search": {"algorithm": algorithm, "seed": 5},
        "budget": {"maxTrials": 16, "parallelism": 2},
    }
    if algorithm == "grid":
        overrides["parameters"] = [
            {"name": "lr", "type": "discrete", "values": [0.001, 0.01, 0.1]},
            {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
            {"name": "layers", "type": "int", "min": 1, "max": 3},
        ]
    if algorithm == "cmaes":
        overrides["parameters"] = [
            {"name": "lr", "type": "float", "min": 1e-4, "max": 1e-1, "log": True},
            {"name": "layers", "type": "int", "min": 1, "max": 4},
        ]
        overrides["trial"] = {
            "template": {
                "spec": {"containers": [{"name": "t", "image": "i", "command": ["train"]}]}
            }
        }
    spec = spec_of(**overrides)
    uninterrupted = World(Planner(spec, "x"))
    for _ in range(9):
        uninterrupted.step(succeed)
    # A new process: a fresh planner that knows only what the trials record.
    restarted = World(Planner(spec, "x"), list(uninterrupted.views.values()))
    restarted.started = list(uninterrupted.started)
    uninterrupted.run(succeed)
    restarted.run(succeed)
    assert restarted.suggested == uninterrupted.suggested
    indices = [i for i, attempt, _ in restarted.suggested if attempt == 0]
    assert len(indices) == len(set(indices)), "a trial index was started twice"


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
    reused.run(succeed)
    assert plugins.SAMPLERS[algorithm].reusable
    # The same experiment with every suggestion made by a freshly built sampler.
    monkeypatch.setattr(plugins, "reseed", lambda sampler, seed: False)
    fresh = World(Planner(spec, "x"))
    fresh.run(succeed)
    assert reused.suggested == fresh.suggested
    assert len(reused.suggested) == 14


def test_budget_and_parallelism_are_respected() -> None:
    world = World(Planner(spec_of(budget={"maxTrials": 7, "parallelism": 3}), "x"))
    plan = world.run(succeed)
    assert world.max_active == 3
    assert sorted(i for i, _, _ in world.suggested) == list(range(7))
    assert plan.finished == FinishExperiment(
        "Succeeded", "BudgetExhausted", "all 7 trials ended; 7 succeeded"
    )
    assert plan.counts["succeeded"] == 7 and plan.counts["total"] == 7


def test_the_same_world_gives_the_same_actions() -> None:
    planner = Planner(spec_of(), "x")
    world = World(planner)
    world.step(succeed)
    views = list(world.views.values())
    first = planner.plan(views, now=NOW)
    second = planner.plan(views, now=NOW)
    assert first.actions == second.actions


def test_best_trial_is_reported() -> None:
    world = World(Planner(spec_of(budget={"maxTrials": 6, "parallelism": 2}), "x"))
    plan = world.run(succeed)
    best = max(
        (v for v in world.views.values() if v.values),
        key=lambda v: v.values[0],  # type: ignore[index]
    )
    assert plan.best is not None and plan.best.name == best.name


def test_failed_trials_are_retried_with_the_same_parameters() -> None:
    spec = spec_of(
        budget={"maxTrials": 2, "parallelism": 1},
        trial={**experiment_doc()["spec"]["trial"], "retries": 1},
    )
    world = World(Planner(spec, "x"))
    world.step(fail)  # starts x-0, which then fails
    plan = world.step()
    retry = plan.of(StartTrial)
    assert len(retry) == 1 and retry[0].index == 0 and retry[0].attempt == 1
    assert retry[0].parameters == world.views["x-0"].parameters
    assert plan.counts["retried"] == 0  # counted once the retry exists
    assert world.planner.plan(list(world.views.values()), now=NOW).counts["retried"] == 1


def test_too_many_failures_fail_the_experiment() -> None:
    spec = spec_of(budget={"maxTrials": 10, "parallelism": 2, "maxFailedTrials": 2})
    world = World(Planner(spec, "x"))
    plan = world.run(fail)
    assert plan.finished is not None
    assert (plan.finished.phase, plan.finished.reason) == ("Failed", "TooManyFailures")
    assert "3 trials failed" in plan.finished.message
    assert len(world.suggested) < 10


def test_goal_reached_stops_and_cancels_the_rest() -> None:
    spec = spec_of(
        objective={"metric": "acc", "direction": "maximize", "goal": 0.5},
        budget={"maxTrials": 10, "parallelism": 3},
    )
    world = World(Planner(spec, "x"))
    world.step()  # three running
    world.views["x-0"] = replace(world.views["x-0"], phase="Succeeded", values=(0.7,))
    plan = world.step()
    assert plan.finished is not None and plan.finished.reason == "GoalReached"
    cancelled = {a.name for a in plan.of(StopTrial)}
    assert cancelled == {"x-1", "x-2"}
    assert not plan.of(StartTrial)


def test_deadline_finishes_the_experiment() -> None:
    spec = spec_of(budget={"maxTrials": 10, "parallelism": 2, "deadline": "1h"})
    world = World(Planner(spec, "x"))
    world.step(succeed, started_at=NOW)
    plan = world.step(now=NOW + 3601, started_at=NOW)
    assert plan.finished is not None
    assert (plan.finished.phase, plan.finished.reason) == ("Succeeded", "DeadlineExceeded")


def test_suspended_experiments_start_nothing() -> None:
    plan = Planner(spec_of(), "x").plan([], now=NOW, suspended=True)
    assert plan.actions == []


def test_grid_visits_every_point_once_then_stops() -> None:
    spec = spec_of(
        search={"algorithm": "grid", "seed": 1},
        parameters=[
            {"name": "lr", "type": "float", "min": 0.1, "max": 0.3, "step": 0.1},
            {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
        ],
        budget={"maxTrials": 20, "parallelism": 2},
    )
    world = World(Planner(spec, "x"))
    plan = world.run(succeed)
    points = {(p["lr"], p["opt"]) for _, _, p in world.suggested}
    assert len(world.suggested) == 6 and len(points) == 6
    assert {lr for lr, _ in points} == {0.1, 0.2, 0.3}
    assert plan.finished is not None and plan.finished.reason == "SearchSpaceExhausted"


def curve(final: float, steps: int) -> dict[int, float]:
    return {s: final * s / steps for s in range(1, steps + 1)}


@pytest.mark.parametrize(
    ("algorithm", "settings"), [("median", {"nStartupTrials": 3}), ("asha", {"minResource": 2})]
)
def test_pruners_stop_a_trailing_trial(algorithm: str, settings: dict[str, Any]) -> None:
    spec = spec_of(
        earlyStopping={"algorithm": algorithm, "settings": settings},
        budget={"maxTrials": 10, "parallelism": 1},
    )
    planner = Planner(spec, "x")
    views = []
    for i in range(5):
        s = planner.search.suggest(i)
        views.append(
            TrialRecord(
                f"x-{i}",
                i,
                0,
                "Succeeded",
                s.parameters,
                values=(0.9,),
                intermediate=curve(0.9, 10),
                search_state=s.state,
            )
        )
    s = planner.search.suggest(5)
    bad = TrialRecord(
        "x-5",
        5,
        0,
        "Running",
        s.parameters,
        intermediate={1: 0.01, 2: 0.01, 3: 0.01},
        search_state=s.state,
    )
    plan = planner.plan([*views, bad], now=NOW)
    stops = plan.of(StopTrial)
    assert [(a.name, a.phase, a.reason) for a in stops] == [("x-5", "Pruned", "EarlyStopped")]
    # A pruned trial frees its slot at once.
    assert [a.index for a in plan.of(StartTrial)] == [6]


def test_good_trials_are_not_pruned_and_none_never_prunes() -> None:
    for algorithm in ("median", "none"):
        spec = spec_of(
            earlyStopping={"algorithm": algorithm}, budget={"maxTrials": 10, "parallelism": 1}
        )
        planner = Planner(spec, "x")
        views = []
        for i in range(6):
            s = planner.search.suggest(i)
            views.append(
                TrialRecord(
                    f"x-{i}",
                    i,
                    0,
                    "Succeeded",
                    s.parameters,
                    values=(0.5,),
                    intermediate=curve(0.5, 10),
                    search_state=s.state,
                )
            )
        s = planner.search.suggest(6)
        good = TrialRecord(
            "x-6", 6, 0, "Running", s.parameters, intermediate=curve(0.9, 10), search_state=s.state
        )
        bad = replace(good, intermediate={k: 0.0 for k in range(1, 11)})
        assert planner.plan([*views, good], now=NOW).of(StopTrial) == []
        if algorithm == "none":
            assert Planner(spec, "x").plan([*views, bad], now=NOW).of(StopTrial) == []


def test_running_progress_matters_to_a_plan_only_with_a_pruner_or_a_non_finite_value() -> None:
    def running(planner: Planner, intermediate: dict[int, float]) -> list[TrialRecord]:
        views = []
        for i in range(7):  # six ended (the median pruner's start-up), one running
            s = planner.search.suggest(i)
            phase = "Succeeded" if i < 6 else "Running"
            views.append(
                TrialRecord(f"x-{i}", i, 0, phase, s.parameters, search_state=s.state,
                          values=(0.5,) if i < 6 else None,
                          intermediate=curve(0.5, 10) if i < 6 else intermediate)
            )  # fmt: skip
        return views

    budget = {"maxTrials": 10, "parallelism": 1}
    quiet = spec_of(earlyStopping={"algorithm": "none"}, budget=budget)
    assert not Planner(quiet, "x").reacts_to([0.5, 0.0, -3.0])
    assert Planner(quiet, "x").reacts_to([0.5, math.nan])
    assert Planner(quiet, "x").reacts_to([-math.inf])
    # What it says holds: without a pruner, finite progress changes nothing ...
    hopeless = {k: 0.0 for k in range(1, 11)}
    assert Planner(quiet, "x").plan(running(Planner(quiet, "x"), hopeless), now=NOW) == Planner(
        quiet, "x"
    ).plan(running(Planner(quiet, "x"), {}), now=NOW)
    # ... and a non-finite value fails the trial.
    planner = Planner(quiet, "x")
    stops = planner.plan(running(planner, {1: 0.5, 2: math.nan}), now=NOW).of(StopTrial)
    assert [(s.name, s.reason) for s in stops] == [("x-6", "ObjectiveNotFinite")]
    # A pruner judges every value.
    pruning = spec_of(earlyStopping={"algorithm": "median"}, budget=budget)
    assert Planner(pruning, "x").reacts_to([0.5])
    planner = Planner(pruning, "x")
    assert planner.plan(running(planner, hopeless), now=NOW).of(StopTrial) != []
    # Several objectives (no pruner): only a non-finite value counts.
    multi = spec_of(
        objective=None,
        objectives=[{"metric": "acc", "direction": "maximize"},
                    {"metric": "ms", "direction": "minimize"}],
    )  # fmt: skip
    assert not Planner(multi, "x").reacts_to([0.5])
    assert Planner(multi, "x").reacts_to([math.nan])


def test_ended_trials_count_as_the_world_has_them_now() -> None:
    """The planner remembers trials that ended for good, yet a world that
    changed under it (a trial gone, a trial changed) is counted as it is."""
    spec = spec_of(budget={"maxTrials": 6, "parallelism": 1})
    planner = Planner(spec, "x")
    world = World(planner)
    for _ in range(4):
        world.step(succeed)
    counts = world.step().counts  # and x-4 starts
    assert (counts["succeeded"], counts["total"]) == (4, 4)
    gone = world.views.pop("x-1")
    counts = world.step().counts
    assert (counts["succeeded"], counts["running"], counts["total"]) == (3, 1, 4)
    world.views["x-1"] = gone
    world.views["x-2"] = replace(world.views["x-2"], phase="Failed", retryable=False)
    counts = world.step().counts
    assert (counts["succeeded"], counts["failed"], counts["total"]) == (3, 1, 5)
    # An equal copy of every view is the same world.
    world.views = {name: replace(v) for name, v in world.views.items()}
    assert world.step().counts == counts
    # A new attempt of a trial that ended is its latest.
    world.views["x-0-r1"] = replace(world.views["x-0"], name="x-0-r1", attempt=1, phase="Running")
    counts = world.step().counts
    assert (counts["succeeded"], counts["running"], counts["retried"]) == (2, 2, 1)


def test_multi_objective_reports_the_pareto_front() -> None:
    spec = spec_of(
        objective=None,
        objectives=[
            {"metric": "acc", "direction": "maximize"},
            {"metric": "ms", "direction": "minimize"},
        ],
        search={"algorithm": "nsga2", "seed": 1},
        budget={"maxTrials": 4, "parallelism": 4},
    )
    planner = Planner(spec, "x")
    world = World(planner)
    world.step()
    results = {"x-0": (0.9, 10.0), "x-1": (0.8, 5.0), "x-2": (0.7, 20.0), "x-3": (0.95, 30.0)}
    for name, values in results.items():
        world.views[name] = replace(world.views[name], phase="Succeeded", values=values)
    plan = world.step()
    assert {b.name for b in plan.pareto_front} == {"x-0", "x-1", "x-3"}  # x-2 is dominated by x-0
    assert plan.best is None
    assert plan.finished is not None and plan.finished.reason == "BudgetExhausted"


def test_a_decided_but_unrecorded_trial_is_started_again_with_the_same_parameters() -> None:
    spec = spec_of(budget={"maxTrials": 6, "parallelism": 3})
    first = Planner(spec, "x")
    plan = first.plan([], now=NOW)
    starts = {a.index: a for a in plan.of(StartTrial)}
    # Only trials 0 and 2 were created before the crash.
    recorded = [
        TrialRecord(
            f"x-{i}", i, 0, "Running", starts[i].parameters, search_state=starts[i].search_state
        )
        for i in (0, 2)
    ]
    again = Planner(spec, "x").plan(recorded, now=NOW).of(StartTrial)
    assert [a.index for a in again] == [1]
    assert again[0].parameters == starts[1].parameters


def test_conclude_turns_an_ended_trial_into_an_outcome() -> None:
    spec = spec_of(objective={"metric": "acc", "direction": "maximize", "final": "best"})
    obs = [Observation(1, {"acc": 0.5}), Observation(2, {"acc": 0.8}), Observation(3, {"acc": 0.7})]
    assert conclude(spec, 0, obs).values == (0.8,)
    assert conclude(spec, 1, obs).reason == "Error"
    assert conclude(spec, 0, obs, failure="Timeout").reason == "Timeout"
    missing = conclude(spec, 0, [Observation(1, {"loss": 0.1})])
    assert (missing.phase, missing.reason, missing.retryable) == (
        "Failed",
        "MissingObjective",
        False,
    )
    nan = conclude(spec_of(), 0, [Observation(1, {"acc": float("nan")})])
    assert (nan.phase, nan.reason, nan.retryable) == ("Failed", "ObjectiveNotFinite", False)
    mean = spec_of(
        objective={"metric": "acc", "direction": "maximize", "final": "mean", "window": 2}
    )
    assert conclude(mean, 0, obs).values == (pytest.approx(0.75),)


def test_template_substitution_and_environment() -> None:
    container = {
        "name": "t",
        "command": ["python", "train.py", "--lr=${params.lr}"],
        "args": ["${params.opt}"],
        "env": [{"name": "LAYERS", "value": "${params.layers}"}],
    }
    out = substitute_container(container, {"lr": 0.01, "opt": "adam", "layers": 3})
    assert out["command"][-1] == "--lr=0.01"
    assert out["args"] == ["adam"]
    assert out["env"][0]["value"] == "3"
    assert container["command"][-1] == "--lr=${params.lr}"  # the template is untouched
    env = trial_environment("xp", "xp-1", {"lr": 0.01}, 42, 0)
    assert env["TRIALFORGE_PARAMS"] == '{"lr": 0.01}' and env["TRIALFORGE_SEED"] == "42"


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_gp_without_torch_says_what_to_install() -> None:
    with pytest.raises(EngineError, match="needs the Python package 'torch'"):
        Planner(spec_of(search={"algorithm": "gp"}), "x")


def test_qmc_walks_one_low_discrepancy_sequence() -> None:
    spec = spec_of(
        search={"algorithm": "qmc", "seed": 4},
        parameters=[{"name": "lr", "type": "float", "min": 0.0, "max": 1.0}],
        budget={"maxTrials": 8, "parallelism": 1},
        trial={
            "template": {
                "spec": {"containers": [{"name": "t", "image": "i", "command": ["train"]}]}
            }
        },
    )
    world = World(Planner(spec, "x"))
    world.run(lambda v: replace(v, phase="Succeeded", values=(v.parameters["lr"],)))
    # Optuna's QMC learns the space from the first trial (drawn at random),
    # then walks the scrambled Sobol sequence: 7 points, 7 distinct eighths.
    bins = [int(p["lr"] * 8) for _, _, p in world.suggested[1:]]
    assert len(set(bins)) == 7, bins


def test_the_planner_module_still_offers_what_it_was_split_into() -> None:
    # Adapters and reporting import these from engine.planner; they now live elsewhere.
    from trialforge.engine import actions, design, outcome, planner

    for name in ("StartTrial", "StopTrial", "FinishExperiment", "Action"):
        assert getattr(planner, name) is getattr(actions, name)
    for name in ("Slot", "BASELINE", "search_config", "search_index_of", "slot_of",
                 "planned_trials", "design_summary", "ROLE_SEARCH", "ROLE_BASELINE",
                 "ROLE_ARM", "ROLE_CONFIRM"):  # fmt: skip
        assert getattr(planner, name) is getattr(design, name)
    assert planner.Best is outcome.Best
    assert set(planner.__all__) <= set(dir(planner))
