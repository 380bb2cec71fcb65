"""engine.status: one status for both runtimes, built from a plan."""

from __future__ import annotations

import json
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


# -- bounded: the status of 10,000 trials stays far below etcd's limit -----------------

ETCD_LIMIT = 1_572_864  # etcd's default --max-request-bytes, 1.5 MiB


def wide_doc() -> dict[str, Any]:
    """The Experiment whose status entries are the widest: 64 parameters with
    63-character names, two objectives, a baseline (the search is compared to it)."""
    names = [f"p{i:02d}" + "x" * 60 for i in range(64)]
    trial = experiment_doc()["spec"]["trial"]
    trial["template"]["spec"]["containers"][0]["command"] = ["python", "t.py"]
    return experiment_doc(
        trial=trial,
        objective=None,
        objectives=[
            {"metric": "acc", "direction": "maximize"},
            {"metric": "size", "direction": "minimize"},
        ],
        parameters=[{"name": n, "type": "float", "min": 0.0, "max": 1.0} for n in names],
        baseline={"parameters": dict.fromkeys(names, 0.5)},
        search={"algorithm": "nsga2", "seed": 1},
        budget={"maxTrials": 10_000, "parallelism": 200},
    )


def wide_spec() -> Any:
    return load_experiment(wide_doc()).spec


def widest_status(n: int = 10_000) -> tuple[Any, ExperimentStatus]:
    """The status of ``n`` trials at their widest (also written to a real API server by
    tests/cluster/test_bounds.py): every trial on the Pareto front, every configuration
    compared against the baseline, 64 parameters with 63-character names."""
    from trialforge.engine.comparison import Group, comparison_rows
    from trialforge.engine.planner import Best, FinishExperiment, Plan

    spec = wide_spec()
    names = [p.name for p in spec.parameters]
    trial = "a-sixty-character-experiment-name-of-the-longest-kind-00000-{}"

    def params(k: int) -> dict[str, float]:
        return {name: (k * 7919 + j) % 1000 / 999 for j, name in enumerate(names)}

    # Every trial on the front (a trade-off: more accuracy, more size).
    front = [
        Best(trial.format(k), k, params(k), (k / n, k / n + 1e-3), f"c{k}", 2, f"s3://b/{k}")
        for k in range(n)
    ]
    # Every configuration compared against the baseline, two runs each, some failed.
    groups = [Group("baseline", spec.baseline.parameters, (0.5, 0.51), 1, 0,
                    tuple(trial.format(n + r) for r in range(1000)))]  # fmt: skip
    groups += [
        Group(f"c{k}", params(k), (k / n, k / n + 0.01), int(k % 5 == 0), 0,
              (trial.format(k), trial.format(k) + "-r1"))
        for k in range(n)
    ]  # fmt: skip
    comparison = comparison_rows(
        groups, "baseline", "acc", "maximize", source="search", bootstrap_resamples=0
    )
    counts = {"succeeded": n, "failed": 0, "pruned": 0, "cancelled": 0, "retried": 0}
    counts |= {"pending": 0, "running": 0, "total": n}
    done = FinishExperiment("Succeeded", "BudgetExhausted", f"all {n} trials ran")
    plan = Plan([done], counts, None, front, done, comparison)

    status = experiment_status(spec, plan, started_at=START, now=START + 3600, generation=1)
    return spec, status


def test_the_status_of_10000_trials_all_on_the_front_stays_far_below_etcds_limit() -> None:
    from trialforge.api.status import MAX_PARETO_FRONT
    from trialforge.engine.comparison import MAX_CANDIDATE_ROWS

    n = 10_000
    _, status = widest_status(n)
    wire = status.to_wire()
    size = len(json.dumps(wire, separators=(",", ":")))
    # The widest entries possible: a third of etcd's limit (about 0.4 MiB; the
    # spec, at most as wide, and a margin fit beside it).  docs/scaling.md.
    assert size < ETCD_LIMIT / 3, size
    assert len(wire["paretoFront"]) == MAX_PARETO_FRONT and wire["paretoFrontSize"] == n
    rows = wire["comparison"]
    assert sum(r["role"] == "candidate" for r in rows) == MAX_CANDIDATE_ROWS
    by_role = {r["role"]: r for r in rows}
    assert by_role["baseline"]["trialCount"] == 1000 and len(by_role["baseline"]["trials"]) == 50
    for role in ("omnibus", "passFail"):
        assert by_role[role]["armCount"] == n + 1
    shown = {r["arm"] for r in rows if "arm" in r}
    assert set(by_role["omnibus"]["arms"]) == shown
    assert set(by_role["passFail"]["passRates"]) <= shown
    assert ExperimentStatus.model_validate(wire) == status


def test_the_front_in_the_status_keeps_each_objectives_ends_and_spreads_along_it() -> None:
    from trialforge.api.status import MAX_PARETO_FRONT
    from trialforge.engine.planner import Best

    spec, plan = finished_world(
        objective=None,
        objectives=[
            {"metric": "acc", "direction": "maximize"},
            {"metric": "size", "direction": "minimize"},
        ],
        search={"algorithm": "random", "seed": 3},
        budget={"maxTrials": 2, "parallelism": 1},
    )
    n = 400
    # A front bunched at one end: a spread keeps members at the other end too.
    xs = sorted({round((k / n) ** 4, 9) for k in range(n)})
    front = [Best(f"t-{i}", i, {"lr": x}, (x, x), f"c{i}") for i, x in enumerate(xs)]
    status = experiment_status(spec, replace(plan, pareto_front=front), started_at=START, now=START)
    shown = status.pareto_front or []
    assert len(shown) == MAX_PARETO_FRONT and status.pareto_front_size == len(front)
    picked = [b.trial for b in shown]
    assert picked == sorted(picked, key=lambda t: int(t.split("-")[1]))  # the front's order
    assert {front[0].name, front[-1].name} <= set(picked)  # both ends of both objectives
    # Spread, not the first 50: the upper half of the range has members too.
    assert sum(1 for b in shown if b.values[0] > 0.5) >= 5


def test_a_front_within_the_bound_is_listed_whole() -> None:
    spec, plan = finished_world(
        objective=None,
        objectives=[
            {"metric": "acc", "direction": "maximize"},
            {"metric": "size", "direction": "minimize"},
        ],
        search={"algorithm": "nsga2", "seed": 1},
        budget={"maxTrials": 6, "parallelism": 2},
    )
    status = experiment_status(spec, plan, started_at=START, now=START)
    assert status.pareto_front_size == len(plan.pareto_front) == len(status.pareto_front or [])
