"""engine/outcome.py: with spec.constraints, the best trial and the Pareto front are
chosen among feasible trials only (issue 17, item 2)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tests.factories import World, experiment_doc, score
from trialforge.api import load_experiment
from trialforge.api.experiment import ExperimentSpec
from trialforge.engine.objective import is_feasible
from trialforge.engine.planner import Planner

LATENCY = [{"metric": "latency_ms", "max": 12}]  # one layer only; the best has two


def spec_of(**overrides: Any) -> ExperimentSpec:
    return load_experiment(experiment_doc(**overrides)).spec


def latency(params: dict[str, Any]) -> float:
    """Deeper is slower: 8 ms a layer."""
    return 8.0 * params["layers"]


def ender(spec: ExperimentSpec) -> Any:
    def end(view: Any) -> Any:
        params = dict(view.parameters)
        constraints = {"latency_ms": latency(params)}
        values: tuple[float, ...] = (score(params),)
        if spec.multi_objective:
            values = (score(params), -latency(params))
        return replace(
            view, phase="Succeeded", values=values, constraints=constraints,
            feasible=is_feasible(spec, constraints),
        )  # fmt: skip

    return end


def test_the_best_trial_is_the_best_feasible_one() -> None:
    spec = spec_of(
        constraints=LATENCY,
        search={"algorithm": "random", "seed": 4},
        budget={"maxTrials": 16, "parallelism": 2},
    )
    world = World(Planner(spec, "x"))
    plan = world.run(ender(spec))
    runs = [dict(a.parameters) for a in world.started]
    feasible = [p for p in runs if latency(p) <= 12]
    infeasible = [p for p in runs if latency(p) > 12]
    assert feasible and infeasible  # both kinds ran
    assert plan.counts["infeasible"] == len(infeasible)
    assert plan.best is not None
    assert latency(dict(plan.best.parameters)) <= 12
    assert plan.best.values[0] == max(score(p) for p in feasible)
    # Unconstrained, the same trials would have crowned an infeasible one here.
    assert max(score(p) for p in infeasible) > plan.best.values[0]


def test_the_pareto_front_holds_feasible_trials_only() -> None:
    spec = spec_of(
        objective=None,
        objectives=[
            {"metric": "acc", "direction": "maximize"},
            {"metric": "speed", "direction": "maximize"},
        ],
        constraints=[{"metric": "latency_ms", "max": 20}],
        search={"algorithm": "nsga2", "seed": 2},
        budget={"maxTrials": 12, "parallelism": 2},
    )
    world = World(Planner(spec, "x"))
    plan = world.run(ender(spec))
    assert plan.pareto_front
    assert all(latency(dict(b.parameters)) <= 20 for b in plan.pareto_front)
    assert any(latency(dict(a.parameters)) > 20 for a in world.started)


def test_no_feasible_trial_means_no_best() -> None:
    spec = spec_of(
        constraints=[{"metric": "latency_ms", "max": 1}],
        search={"algorithm": "random", "seed": 1},
        budget={"maxTrials": 4, "parallelism": 2},
    )
    plan = World(Planner(spec, "x")).run(ender(spec))
    assert plan.best is None
    assert plan.counts["infeasible"] == 4
