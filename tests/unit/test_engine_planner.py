"""Baselines, repeats, arms and confirmation in the planner, on scripted worlds (issue 8).

A World starts what the planner asks and ends each trial with a value drawn
from a known truth (a mean per configuration, noise from the trial's seed),
so the design (which runs, which seeds, which budget) and the comparison the
planner computes can both be checked against what is known.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests import factories
from tests.factories import NOW, experiment_doc, running_view, succeed_scored
from trialforge.api import load_experiment
from trialforge.api.experiment import ExperimentSpec
from trialforge.engine.actions import FinishExperiment, StartTrial, StopTrial
from trialforge.engine.comparison import verdicts
from trialforge.engine.design import planned_trials
from trialforge.engine.planner import Planner
from trialforge.engine.record import TrialRecord

PARAMS = [
    {"name": "lr", "type": "float", "min": 0.01, "max": 1.0},
    {"name": "warmup", "type": "int", "min": 0, "max": 100},
]


TRIAL = {
    "template": {
        "spec": {
            "containers": [
                {
                    "name": "trainer",
                    "image": "registry.example/t:1",
                    "command": ["python", "t.py", "--lr=${params.lr}", "--w=${params.warmup}"],
                }
            ]
        }
    }
}


def spec_of(**overrides: Any) -> ExperimentSpec:
    overrides.setdefault("parameters", PARAMS)
    overrides.setdefault("trial", TRIAL)
    return load_experiment(experiment_doc(**overrides)).spec


def truth(params: dict[str, Any]) -> float:
    """The same law as examples/trainers/ab_noisy.py."""
    return 0.80 + 0.03 * min(params["warmup"], 100) / 100 - 0.2 * max(0.0, params["lr"] - 0.3)


def noisy(view: TrialRecord, sd: float = 0.01) -> float:
    return truth(dict(view.parameters)) + random.Random(view.seed).gauss(0.0, sd)


class World(factories.World):
    limit = 2000  # repeats, baselines and confirm runs make long experiments


def succeed(view: TrialRecord) -> TrialRecord:
    return replace(view, phase="Succeeded", values=(noisy(view),))


# --- arms: A/B/n --------------------------------------------------------------------

ARMS = [
    {"name": "warmup", "parameters": {"lr": 0.1, "warmup": 100}},  # truly better
    {"name": "same", "parameters": {"lr": 0.2, "warmup": 0}},  # truly the same
    {"name": "high-lr", "parameters": {"lr": 0.5, "warmup": 0}},  # truly worse
]


def arms_spec(**extra: Any) -> ExperimentSpec:
    return spec_of(
        objective={"metric": "acc", "direction": "maximize"},
        baseline={"parameters": {"lr": 0.1, "warmup": 0}},
        arms=ARMS,
        repeats=6,
        search={"seed": 5},
        budget={"parallelism": 3},
        **extra,
    )


def test_arms_run_each_configuration_repeats_times_with_distinct_seeds() -> None:
    spec = arms_spec()
    world = World(Planner(spec, "x"))
    plan = world.run(succeed)
    assert plan.finished == FinishExperiment(
        "Succeeded", "Completed", "all 24 trials of 4 arms ended; 24 succeeded"
    )
    assert planned_trials(spec) == 24 == len(world.started)
    assert Counter(a.config for a in world.started) == {
        "baseline": 6, "warmup": 6, "same": 6, "high-lr": 6,
    }  # fmt: skip
    assert Counter(a.role for a in world.started) == {"baseline": 6, "arm": 18}
    # Each run its own seed; every configuration's repeats 0..5; parameters exactly the arm's.
    assert len({a.seed for a in world.started}) == 24
    for a in world.started:
        assert 0 <= a.repeat < 6
        expected = spec.baseline.parameters if a.config == "baseline" else next(
            arm["parameters"] for arm in ARMS if arm["name"] == a.config
        )  # fmt: skip
        assert a.parameters == expected
    # Interleaved by repeat: the first four started are one run of each configuration.
    assert {a.config for a in world.started[:4]} == {"baseline", "warmup", "same", "high-lr"}
    assert world.max_active <= 3
    assert sorted(a.index for a in world.started) == list(range(24))


def test_arms_comparison_gives_the_true_verdicts() -> None:
    world = World(Planner(arms_spec(), "x"))
    plan = world.run(succeed)
    rows = plan.comparison
    assert rows is not None
    assert verdicts(rows) == {"warmup": "better", "same": "inconclusive", "high-lr": "worse"}
    base = rows[0]
    assert base["role"] == "baseline" and base["arm"] == "baseline" and base["n"] == 6
    assert base["source"] == "arms" and base["metric"] == "acc" and "interim" not in base
    better = next(r for r in rows if r.get("arm") == "warmup")
    assert better["ciLow"] < better["difference"] < better["ciHigh"]
    assert better["bootstrapLow"] < better["difference"] < better["bootstrapHigh"]
    assert better["ciLow"] > 0.0 and better["pAdjusted"] >= better["pValue"]
    assert better["hedgesG"] > 1.0 and better["test"] == "welch"
    # ANOVA across the four arms; no pass/fail row without failures.
    roles = [r["role"] for r in rows]
    assert roles.count("omnibus") == 1 and "passFail" not in roles
    assert next(r for r in rows if r["role"] == "omnibus")["pValue"] < 0.001
    # The best is the arm with the best mean, over its six runs.
    assert plan.best is not None and plan.best.config == "warmup" and plan.best.runs == 6


def test_arms_without_baseline_compare_with_the_first_arm() -> None:
    spec = spec_of(arms=ARMS, repeats=5, search={"seed": 1}, budget={"parallelism": 2})
    plan = World(Planner(spec, "x")).run(succeed)
    assert plan.comparison is not None
    assert plan.comparison[0]["arm"] == "warmup" and plan.comparison[0]["role"] == "baseline"
    # acc is maximised in the factory: both others are worse than the warmup arm.
    assert verdicts(plan.comparison) == {"same": "worse", "high-lr": "worse"}


def test_the_comparison_is_interim_while_runs_go_on() -> None:
    world = World(Planner(arms_spec(), "x"))
    for _ in range(10):
        plan = world.step(succeed)
    assert plan.finished is None and plan.comparison is not None
    assert plan.comparison[0].get("interim") is True


def test_failed_runs_give_a_pass_fail_test() -> None:
    def end(view: TrialRecord) -> TrialRecord:
        if view.config == "high-lr" and view.repeat % 2 == 0:
            return replace(view, phase="Failed", reason="Error", retryable=False)
        return succeed(view)

    plan = World(Planner(arms_spec(), "x")).run(end)
    assert plan.comparison is not None
    pass_fail = next(r for r in plan.comparison if r["role"] == "passFail")
    assert pass_fail["passRates"]["high-lr"] == 0.5 and pass_fail["passRates"]["warmup"] == 1.0
    assert pass_fail["test"] in ("chi2", "fisher") and 0.0 < pass_fail["pValue"] <= 1.0
    row = next(r for r in plan.comparison if r.get("arm") == "high-lr")
    assert row["n"] == 3 and row["failed"] == 3


def test_one_run_per_arm_is_inconclusive_with_a_reason() -> None:
    spec = spec_of(
        baseline={"parameters": {"lr": 0.1, "warmup": 0}},
        arms=ARMS[:1],
        search={"seed": 2},
        budget={"parallelism": 1},
    )
    plan = World(Planner(spec, "x")).run(succeed)
    assert plan.comparison is not None
    row = plan.comparison[1]
    assert row["verdict"] == "inconclusive" and "at least 2" in row["note"]


# --- search with repeats and a baseline ---------------------------------------------


def search_spec(**extra: Any) -> ExperimentSpec:
    doc: dict[str, Any] = {
        "objective": {"metric": "acc", "direction": "maximize"},
        "search": {"algorithm": "random", "seed": 3},
        "budget": {"maxTrials": 4, "parallelism": 2},
    }
    doc.update(extra)
    return spec_of(**doc)


def test_repeats_multiply_trials_and_the_search_hears_the_mean() -> None:
    spec = search_spec(repeats=3)
    planner = Planner(spec, "x")
    world = World(planner)
    plan = world.run(succeed)
    assert plan.finished is not None and plan.finished.reason == "BudgetExhausted"
    assert "4 configurations (3 runs each)" in plan.finished.message
    assert len(world.started) == 12 == planned_trials(spec)
    by_config: dict[int, list[StartTrial]] = {}
    for a in world.started:
        assert a.role == "search" and a.config == f"c{a.search_index}"
        by_config.setdefault(a.search_index, []).append(a)  # type: ignore[arg-type]
    assert sorted(by_config) == [0, 1, 2, 3]
    for runs in by_config.values():
        assert sorted(r.repeat for r in runs) == [0, 1, 2]
        assert len({r.seed for r in runs}) == 3  # fresh seeds ...
        assert len({repr(r.parameters) for r in runs}) == 1  # ... for the same configuration
    # Optuna's trial k holds the mean of configuration k's three runs.
    study = planner.search.study
    for trial in study.get_trials():
        runs = [v for v in world.views.values() if v.search_index == trial.number]
        assert trial.value == pytest.approx(np.mean([v.values[0] for v in runs]))
    assert plan.best is not None and plan.best.runs == 3
    # No baseline, no arms, no confirmation: nothing to compare.
    assert plan.comparison is None


def test_without_repeats_the_design_is_what_it_always_was() -> None:
    planner = Planner(search_spec(), "x")
    world = World(planner)
    world.run(succeed)
    assert [a.index for a in world.started] == [0, 1, 2, 3]
    assert [a.search_index for a in world.started] == [0, 1, 2, 3]
    # Seeds as before roles existed: the search's per-index seed.
    assert [a.seed for a in world.started] == [planner.search.suggest(i).seed for i in range(4)]


def test_the_baseline_runs_first_and_search_configurations_are_compared_with_it() -> None:
    spec = search_spec(repeats=3, baseline={"parameters": {"lr": 0.1, "warmup": 0}})
    world = World(Planner(spec, "x"))
    plan = world.run(succeed)
    assert [a.config for a in world.started[:3]] == ["baseline"] * 3
    assert len(world.started) == 15 == planned_trials(spec)
    rows = plan.comparison
    assert rows is not None and rows[0]["source"] == "search"
    candidates = [r for r in rows if r["role"] == "candidate"]
    assert {r["arm"] for r in candidates} == {"c0", "c1", "c2", "c3"}
    # Picked from the same runs that judge them: the rows say so.
    assert all("the best look better than they are" in r["note"] for r in candidates)
    for r in candidates:
        true_difference = truth(r["parameters"]) - truth({"lr": 0.1, "warmup": 0})
        if r["verdict"] == "better":
            assert true_difference > 0
        if r["verdict"] == "worse":
            assert true_difference < 0


def test_confirm_reruns_the_top_configurations_and_the_baseline_with_fresh_seeds() -> None:
    spec = search_spec(
        baseline={"parameters": {"lr": 0.1, "warmup": 0}},
        confirm={"top": 2, "repeats": 5},
        budget={"maxTrials": 6, "parallelism": 2},
    )
    planner = Planner(spec, "x")
    world = World(planner)
    plan = world.run(succeed)
    assert plan.finished is not None and plan.finished.reason == "BudgetExhausted"
    assert "confirmed with 5 fresh runs" in plan.finished.message
    confirm = [a for a in world.started if a.role == "confirm"]
    search = [a for a in world.started if a.role == "search"]
    assert len(search) == 6 and len(confirm) == 15 == (2 + 1) * 5
    assert len(world.started) == planned_trials(spec) == 1 + 6 + 15
    # The confirmation starts only after every search trial ended.
    first_confirm = min(a.index for a in confirm)
    assert all(a.index < first_confirm for a in search)
    # It re-runs the two best search configurations (by their search value) and the baseline.
    ranked = sorted(
        (v for v in world.views.values() if v.role == "search"),
        key=lambda v: -v.values[0],  # type: ignore[index]
    )
    top = {f"c{ranked[0].search_index}", f"c{ranked[1].search_index}"}
    assert {a.config for a in confirm} == top | {"baseline"}
    # Fresh seeds: none seen before.
    earlier = {a.seed for a in world.started if a.role != "confirm"}
    assert not earlier & {a.seed for a in confirm}
    rows = plan.comparison
    assert rows is not None and rows[0]["source"] == "confirm" and rows[0]["n"] == 5
    assert {r["arm"] for r in rows if r["role"] == "candidate"} == top
    for r in rows:
        if r["role"] == "candidate":
            assert r["n"] == 5 and "look better" not in r.get("note", "")


def test_confirm_without_a_baseline_compares_with_the_search_winner() -> None:
    spec = search_spec(confirm={"top": 3, "repeats": 4}, budget={"maxTrials": 5})
    plan = World(Planner(spec, "x")).run(succeed)
    rows = plan.comparison
    assert rows is not None and rows[0]["source"] == "confirm"
    assert len([r for r in rows if r["role"] == "candidate"]) == 2
    assert rows[0]["arm"].startswith("c")


def test_a_goal_ends_the_search_but_not_the_baseline_or_the_confirmation() -> None:
    spec = search_spec(
        objective={"metric": "acc", "direction": "maximize", "goal": 0.0},
        baseline={"parameters": {"lr": 0.1, "warmup": 0}},
        confirm={"top": 1, "repeats": 2},
        budget={"maxTrials": 50, "parallelism": 2},
    )
    world = World(Planner(spec, "x"))
    plan = world.run(succeed)
    assert plan.finished is not None and plan.finished.reason == "GoalReached"
    roles = Counter(a.role for a in world.started)
    assert roles["confirm"] == 4 and roles["baseline"] == 1 and roles["search"] < 50


def test_a_restarted_planner_goes_on_with_the_same_design() -> None:
    spec = search_spec(
        repeats=2,
        baseline={"parameters": {"lr": 0.1, "warmup": 0}},
        confirm={"top": 1, "repeats": 3},
    )
    world = World(Planner(spec, "x"))
    for _ in range(5):
        world.step(succeed)
    views = list(world.views.values())
    # Two fresh planners (an operator restart) over the same world decide the same.
    a = Planner(spec, "x").plan(views, now=NOW)
    b = Planner(spec, "x").plan(views, now=NOW)
    assert a.actions == b.actions and a.actions
    # And the same as the planner that never restarted.
    assert world.planner.plan(views, now=NOW).actions == a.actions


def test_pruning_with_repeats_stops_the_whole_configuration() -> None:
    spec = search_spec(
        repeats=3,
        earlyStopping={"algorithm": "median", "settings": {"nStartupTrials": 1}},
        budget={"maxTrials": 3, "parallelism": 3},
        objective={"metric": "acc", "direction": "minimize"},
    )
    world = World(Planner(spec, "x"))
    plan = world.step()  # configuration 0: three runs
    assert [a.repeat for a in plan.of(StartTrial)] == [0, 1, 2]
    for view in list(world.views.values()):
        world.views[view.name] = replace(view, phase="Succeeded", values=(0.1,),
                                         intermediate={0: 0.1, 1: 0.1})  # fmt: skip
    plan = world.step()
    started = plan.of(StartTrial)
    assert {a.search_index for a in started} == {1}
    # Configuration 1's first run trails badly: the pruner stops all its runs.
    for a in started:
        name = f"x-{a.index}"
        world.views[name] = replace(world.views[name], intermediate={0: 9.0, 1: 9.0})
    plan = world.step()
    stopped = plan.of(StopTrial)
    assert {s.phase for s in stopped} == {"Pruned"} and len(stopped) == 3


# --- the comparison rows on their own, with a known truth ---------------------------


def spec_with(**overrides: Any) -> ExperimentSpec:
    return load_experiment(experiment_doc(**overrides)).spec


def fail(view: TrialRecord) -> TrialRecord:
    return replace(view, phase="Failed", reason="Error")


ALGORITHMS = ["random", "tpe", "cmaes", "qmc", "nsga2"]


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
    spec = spec_with(**overrides)
    uninterrupted = World(Planner(spec, "x"))
    for _ in range(9):
        uninterrupted.step(succeed_scored)
    # A new process: a fresh planner that knows only what the trials record.
    restarted = World(Planner(spec, "x"), list(uninterrupted.views.values()))
    restarted.started = list(uninterrupted.started)
    uninterrupted.run(succeed_scored)
    restarted.run(succeed_scored)
    assert restarted.suggested == uninterrupted.suggested
    indices = [i for i, attempt, _ in restarted.suggested if attempt == 0]
    assert len(indices) == len(set(indices)), "a trial index was started twice"


def test_budget_and_parallelism_are_respected() -> None:
    world = World(Planner(spec_with(budget={"maxTrials": 7, "parallelism": 3}), "x"))
    plan = world.run(succeed_scored)
    assert world.max_active == 3
    assert sorted(i for i, _, _ in world.suggested) == list(range(7))
    assert plan.finished == FinishExperiment(
        "Succeeded", "BudgetExhausted", "all 7 trials ended; 7 succeeded"
    )
    assert plan.counts["succeeded"] == 7 and plan.counts["total"] == 7


def test_the_same_world_gives_the_same_actions() -> None:
    planner = Planner(spec_with(), "x")
    world = World(planner)
    world.step(succeed_scored)
    views = list(world.views.values())
    first = planner.plan(views, now=NOW)
    second = planner.plan(views, now=NOW)
    assert first.actions == second.actions


def test_best_trial_is_reported() -> None:
    world = World(Planner(spec_with(budget={"maxTrials": 6, "parallelism": 2}), "x"))
    plan = world.run(succeed_scored)
    best = max(
        (v for v in world.views.values() if v.values),
        key=lambda v: v.values[0],  # type: ignore[index]
    )
    assert plan.best is not None and plan.best.name == best.name


def test_failed_trials_are_retried_with_the_same_parameters() -> None:
    spec = spec_with(
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
    spec = spec_with(budget={"maxTrials": 10, "parallelism": 2, "maxFailedTrials": 2})
    world = World(Planner(spec, "x"))
    plan = world.run(fail)
    assert plan.finished is not None
    assert (plan.finished.phase, plan.finished.reason) == ("Failed", "TooManyFailures")
    assert "3 trials failed" in plan.finished.message
    assert len(world.suggested) < 10


def test_goal_reached_stops_and_cancels_the_rest() -> None:
    spec = spec_with(
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
    spec = spec_with(budget={"maxTrials": 10, "parallelism": 2, "deadline": "1h"})
    world = World(Planner(spec, "x"))
    world.step(succeed_scored, started_at=NOW)
    plan = world.step(now=NOW + 3601, started_at=NOW)
    assert plan.finished is not None
    assert (plan.finished.phase, plan.finished.reason) == ("Succeeded", "DeadlineExceeded")


def test_suspended_experiments_start_nothing() -> None:
    plan = Planner(spec_with(), "x").plan([], now=NOW, suspended=True)
    assert plan.actions == []


def test_grid_visits_every_point_once_then_stops() -> None:
    spec = spec_with(
        search={"algorithm": "grid", "seed": 1},
        parameters=[
            {"name": "lr", "type": "float", "min": 0.1, "max": 0.3, "step": 0.1},
            {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
        ],
        budget={"maxTrials": 20, "parallelism": 2},
    )
    world = World(Planner(spec, "x"))
    plan = world.run(succeed_scored)
    points = {(p["lr"], p["opt"]) for _, _, p in world.suggested}
    assert len(world.suggested) == 6 and len(points) == 6
    assert {lr for lr, _ in points} == {0.1, 0.2, 0.3}
    assert plan.finished is not None and plan.finished.reason == "SearchSpaceExhausted"


def curve(final: float, steps: int) -> dict[int, float]:
    return {s: final * s / steps for s in range(1, steps + 1)}


def finished(planner: Planner, n: int, final: float) -> list[TrialRecord]:
    """n trials the planner's search suggested, each succeeded along curve(final, 10)."""
    views = []
    for i in range(n):
        s = planner.search.suggest(i)
        views.append(
            TrialRecord(f"x-{i}", i, 0, "Succeeded", s.parameters, values=(final,),
                        intermediate=curve(final, 10), search_state=s.state)
        )  # fmt: skip
    return views


@pytest.mark.parametrize(
    ("algorithm", "settings"), [("median", {"nStartupTrials": 3}), ("asha", {"minResource": 2})]
)
def test_pruners_stop_a_trailing_trial(algorithm: str, settings: dict[str, Any]) -> None:
    spec = spec_with(
        earlyStopping={"algorithm": algorithm, "settings": settings},
        budget={"maxTrials": 10, "parallelism": 1},
    )
    planner = Planner(spec, "x")
    views = finished(planner, 5, 0.9)
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
        spec = spec_with(
            earlyStopping={"algorithm": algorithm}, budget={"maxTrials": 10, "parallelism": 1}
        )
        planner = Planner(spec, "x")
        views = finished(planner, 6, 0.5)
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
    quiet = spec_with(earlyStopping={"algorithm": "none"}, budget=budget)
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
    pruning = spec_with(earlyStopping={"algorithm": "median"}, budget=budget)
    assert Planner(pruning, "x").reacts_to([0.5])
    planner = Planner(pruning, "x")
    assert planner.plan(running(planner, hopeless), now=NOW).of(StopTrial) != []
    # Several objectives (no pruner): only a non-finite value counts.
    multi = spec_with(
        objective=None,
        objectives=[{"metric": "acc", "direction": "maximize"},
                    {"metric": "ms", "direction": "minimize"}],
    )  # fmt: skip
    assert not Planner(multi, "x").reacts_to([0.5])
    assert Planner(multi, "x").reacts_to([math.nan])


def test_ended_trials_count_as_the_world_has_them_now() -> None:
    """The planner remembers trials that ended for good, yet a world that
    changed under it (a trial gone, a trial changed) is counted as it is."""
    spec = spec_with(budget={"maxTrials": 6, "parallelism": 1})
    planner = Planner(spec, "x")
    world = World(planner)
    for _ in range(4):
        world.step(succeed_scored)
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
    spec = spec_with(
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
    spec = spec_with(budget={"maxTrials": 6, "parallelism": 3})
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


OUTCOMES = ["Succeeded", "Failed", "Pruned"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_trials=st.integers(1, 12),
    parallelism=st.integers(1, 5),
    retries=st.integers(0, 2),
    max_failed=st.one_of(st.none(), st.integers(0, 4)),
    algorithm=st.sampled_from(["random", "tpe"]),
    events=st.lists(
        st.tuples(st.integers(0, 50), st.sampled_from(OUTCOMES), st.floats(0, 1)), max_size=80
    ),
)
def test_planner_invariants(
    max_trials: int,
    parallelism: int,
    retries: int,
    max_failed: int | None,
    algorithm: str,
    events: list[tuple[int, str, float]],
) -> None:
    parallelism = min(parallelism, max_trials)
    doc = experiment_doc(
        search={"algorithm": algorithm, "seed": 0},
        budget={"maxTrials": max_trials, "parallelism": parallelism, "maxFailedTrials": max_failed},
    )
    doc["spec"]["trial"]["retries"] = retries
    spec = load_experiment(doc).spec
    planner = Planner(spec, "p")
    views: dict[str, TrialRecord] = {}
    started: set[tuple[int, int]] = set()
    finished = False
    for pick, outcome, value in [*events, *[(0, "Succeeded", 0.5)] * 60]:
        plan = planner.plan(list(views.values()), now=0.0)
        for action in plan.actions:
            if isinstance(action, StartTrial):
                key = (action.index, action.attempt)
                # Never the same trial started twice.
                assert key not in started
                started.add(key)
                assert action.attempt <= retries
                name = f"p-{action.index}-{action.attempt}"
                views[name] = running_view(name, action)
            elif isinstance(action, StopTrial):
                views[action.name] = replace(views[action.name], phase=action.phase)
        running = [v for v in views.values() if v.phase == "Running"]
        # Never more running than parallelism; never more configurations than maxTrials.
        assert len(running) <= parallelism
        assert len({i for i, _ in started}) <= max_trials
        if plan.finished is not None:
            finished = True
            assert not plan.of(StartTrial)
            assert running == []
            break
        if running:
            view = running[pick % len(running)]
            values = (value,) if outcome == "Succeeded" else None
            views[view.name] = replace(view, phase=outcome, values=values)
    assert finished, "the experiment must end once every trial has"


# Found by hypothesis.  Trial 1 was judged at step 1 before any trial had
# completed and never again, where a fresh planner judged it after trial 0:
@example(
    max_trials=2, parallelism=2, retries=0, repeats=1, max_failed=None, algorithm="random",
    pruner="median", copies=False, events=[(0, "Report", 1.0), (1, "Report", 0.0)],
)  # fmt: skip
# A running trial judged step by step as its steps came (no trial had completed),
# where a fresh planner judged its first step against a completed one:
@example(
    max_trials=2, parallelism=2, retries=0, repeats=1, max_failed=None, algorithm="random",
    pruner="median", copies=False,
    events=[(0, "Report", 1.0), (1, "Report", 0.0), (1, "Report", 0.0)],
)  # fmt: skip
# and a trial that succeeded was judged again, and pruned, by a fresh planner:
@example(
    max_trials=3, parallelism=3, retries=0, repeats=1, max_failed=None, algorithm="random",
    pruner="median", copies=False,
    events=[(0, "Report", 1.0), (38, "Report", 0.0), (8, "Succeeded", 0.0)],
)  # fmt: skip
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_trials=st.integers(1, 10),
    parallelism=st.integers(1, 4),
    retries=st.integers(0, 2),
    repeats=st.integers(1, 2),
    max_failed=st.one_of(st.none(), st.integers(0, 4)),
    algorithm=st.sampled_from(["random", "tpe"]),
    pruner=st.sampled_from(["none", "median"]),
    copies=st.booleans(),
    events=st.lists(
        st.tuples(st.integers(0, 50), st.sampled_from([*OUTCOMES, "Report"]), st.floats(0, 1)),
        max_size=60,
    ),
)
def test_a_planner_that_has_planned_before_plans_like_a_new_one(
    max_trials: int,
    parallelism: int,
    retries: int,
    repeats: int,
    max_failed: int | None,
    algorithm: str,
    pruner: str,
    copies: bool,
    events: list[tuple[int, str, float]],
) -> None:
    """Level-based: what a planner remembers from earlier plans never changes a plan.

    At every step the long-lived planner's plan equals the plan of a planner
    built afresh for the same world (what a restarted adapter gets), whether
    the adapter hands over the same view objects each time or equal copies.
    """
    parallelism = min(parallelism, max_trials)
    if retries:
        # A long-lived study keeps what a failed attempt reported, a rebuilt one
        # hears only the latest attempt, so with retries a pruner may judge
        # differently after a restart (known; not what this test is about).
        pruner = "none"
    doc = experiment_doc(
        search={"algorithm": algorithm, "seed": 0},
        budget={"maxTrials": max_trials, "parallelism": parallelism, "maxFailedTrials": max_failed},
        earlyStopping={"algorithm": pruner, "settings": {"nStartupTrials": 1}}
        if pruner != "none"
        else {"algorithm": "none"},
        repeats=repeats,
    )
    doc["spec"]["trial"]["retries"] = retries
    spec = load_experiment(doc).spec
    planner = Planner(spec, "p")
    views: dict[str, TrialRecord] = {}
    for pick, outcome, value in [*events, *[(0, "Succeeded", 0.5)] * 40]:
        world = [replace(v) for v in views.values()] if copies else list(views.values())
        plan = planner.plan(world, now=0.0)
        assert plan == Planner(spec, "p").plan(list(views.values()), now=0.0)
        for action in plan.actions:
            if isinstance(action, StartTrial):
                name = f"p-{action.index}-{action.attempt}"
                views[name] = running_view(name, action)
            elif isinstance(action, StopTrial):
                views[action.name] = replace(views[action.name], phase=action.phase)
        if plan.finished is not None:
            break
        running = [v for v in views.values() if v.phase == "Running"]
        if running:
            view = running[pick % len(running)]
            if outcome == "Report":
                step = len(view.intermediate) + 1
                views[view.name] = replace(view, intermediate={**view.intermediate, step: value})
            else:
                values = (value,) if outcome == "Succeeded" else None
                views[view.name] = replace(view, phase=outcome, values=values)
