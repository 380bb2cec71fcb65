"""Baselines, repeats, arms and confirmation in the planner, on scripted worlds (issue 8).

A World starts what the planner asks and ends each trial with a value drawn
from a known truth (a mean per configuration, noise from the trial's seed),
so the design (which runs, which seeds, which budget) and the comparison the
planner computes can both be checked against what is known.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from tests import factories
from tests.factories import NOW, experiment_doc
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
