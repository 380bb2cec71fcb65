"""engine.status: one status for both runtimes, built from a plan."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tests.factories import World, experiment_doc
from trialforge.api import load_experiment
from trialforge.api.status import ExperimentStatus
from trialforge.engine.planner import Planner
from trialforge.engine.status import experiment_status

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def finished_world(**spec: Any) -> tuple[Any, Any]:
    experiment = load_experiment(experiment_doc(**spec))
    world = World(Planner(experiment.spec, "demo"))

    width = len(experiment.spec.all_objectives)

    def succeed(view: Any) -> Any:
        values = (float(view.parameters["layers"]), view.parameters["lr"])[:width]
        return replace(view, phase="Succeeded", values=values)

    return experiment.spec, world.run(succeed)


def test_a_finished_experiment_has_its_best_times_and_conditions() -> None:
    spec, plan = finished_world(budget={"maxTrials": 4, "parallelism": 2})
    status = experiment_status(spec, plan, started_at=START, now=START + 60, generation=3)
    assert (status.phase, status.reason) == ("Succeeded", "BudgetExhausted")
    assert status.best is not None and status.best.value == status.best_value == plan.best.values[0]
    assert status.best.values == [status.best.value]
    assert status.progress == "4/4"  # kubectl get xp's Progress column
    assert (status.best.config, status.best.runs) == (plan.best.config, 1)
    assert (status.start_time, status.completion_time) == (
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:01:00Z",
    )
    conditions = {c.type: c for c in status.conditions or []}
    assert conditions["Succeeded"].status == conditions["BudgetExhausted"].status == "True"
    assert conditions["Running"].status == "False"
    assert {c.observed_generation for c in conditions.values()} == {3}
    # What is written (wire names) is what the model reads back.
    assert ExperimentStatus.model_validate(status.to_wire()) == status


def test_a_condition_keeps_its_transition_time_while_it_holds() -> None:
    spec, plan = finished_world(budget={"maxTrials": 2, "parallelism": 1})
    first = experiment_status(spec, plan, started_at=START, now=START + 10).to_wire()
    again = experiment_status(
        spec,
        plan,
        started_at=START,
        completed_at=START + 10,
        conditions=first["conditions"],
        now=START + 500,
    ).to_wire()
    assert again["conditions"] == first["conditions"]
    assert again["completionTime"] == first["completionTime"]


def test_before_any_plan_the_experiment_is_pending_and_a_suspended_one_says_so() -> None:
    spec = load_experiment(experiment_doc()).spec
    status = experiment_status(spec, None, started_at=START, now=START)
    assert (status.phase, status.reason, status.trials.total) == ("Pending", "Starting", 0)
    assert status.completion_time is None and status.best is None
    suspended = spec.model_copy(update={"suspend": True})
    status = experiment_status(suspended, None, started_at=START, now=START)
    assert (status.phase, status.reason) == ("Suspended", "Suspended")
    assert {c.type: c.status for c in status.conditions or []}["Suspended"] == "True"


def test_two_objectives_give_a_pareto_front_and_no_single_best() -> None:
    spec, plan = finished_world(
        objective=None,
        objectives=[
            {"metric": "acc", "direction": "maximize"},
            {"metric": "size", "direction": "minimize"},
        ],
        search={"algorithm": "nsga2", "seed": 1},
        budget={"maxTrials": 4, "parallelism": 2},
    )
    assert plan.pareto_front
    status = experiment_status(spec, plan, started_at=START, now=START)
    assert status.best is None and status.best_value is None
    assert status.pareto_front and all(b.value is None for b in status.pareto_front)
    assert [b.trial for b in status.pareto_front] == [b.name for b in plan.pareto_front]
