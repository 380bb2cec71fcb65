"""engine/warm.py and the search's warm start: an earlier experiment's finished trials are
told to the sampler before its first suggestion (issue 17, item 3)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tests.factories import NOW, World, experiment_doc, score, succeed_scored
from trialforge.api import load_experiment
from trialforge.api.experiment import ExperimentSpec
from trialforge.engine.planner import Planner
from trialforge.engine.record import TrialRecord
from trialforge.engine.warm import warm_trials


def spec_of(**overrides: Any) -> ExperimentSpec:
    return load_experiment(experiment_doc(**overrides)).spec


def earlier_run(spec: ExperimentSpec, trials: int = 12) -> list[TrialRecord]:
    """An earlier experiment's records: a random search that ran to its end."""
    earlier = spec.model_copy(
        update={
            "search": spec.search.model_copy(
                update={"algorithm": "random", "seed": 99, "settings": None}
            )
        }
    )
    earlier = earlier.model_copy(
        update={"budget": earlier.budget.model_copy(update={"max_trials": trials})}
    )
    world = World(Planner(earlier, "old"))
    world.run(lambda v: replace(succeed_scored(v), completion_time=NOW - 100 + v.index))
    return list(world.views.values())


def test_every_succeeded_run_is_told_with_its_objective() -> None:
    spec = spec_of(baseline={"parameters": {"lr": 0.01, "opt": "adam", "layers": 2}})
    records = earlier_run(spec)
    warm = warm_trials(spec, spec, records, source="experiment old", before=NOW)
    # 12 search trials and the baseline's run, all succeeded.
    assert len(warm.trials) == len(records) == 13
    assert warm.dropped == [] and warm.warnings == [] and warm.skipped == 0
    by_params = {tuple(sorted(t.parameters.items())): t.values for t in warm.trials}
    for r in records:
        assert by_params[tuple(sorted(r.parameters.items()))] == r.values
    assert warm.summary == "experiment old: 13 trials"


def test_the_compatible_subset_is_told_and_the_warning_names_what_was_dropped() -> None:
    old = spec_of()
    records = earlier_run(old)
    new = spec_of(
        parameters=[
            {"name": "lr", "type": "float", "min": 1e-4, "max": 1e-1, "log": True},
            {"name": "opt", "type": "categorical", "values": ["sgd", "adam", "lion"]},
            {"name": "dropout", "type": "float", "min": 0.0, "max": 0.5},
        ],
        trial={"template": {"spec": {"containers": [
            {"name": "t", "image": "i", "command": ["t", "--lr=${params.lr}"]}]}}},
    )  # fmt: skip
    warm = warm_trials(new, old, records, source="experiment old", before=NOW)
    assert warm.dropped == ["opt", "layers"]
    assert (
        "dropped parameters opt (another space), layers (not in this space)" in (warm.warnings[0])
    )
    assert "it has no dropout; the sampler chooses them freely" in warm.warnings[1]
    assert len(warm.trials) == 12
    assert all(sorted(t.parameters) == ["lr"] for t in warm.trials)
    assert "dropped parameters opt, layers" in warm.summary


def test_trials_outside_the_space_or_after_the_start_are_not_told() -> None:
    old = spec_of()
    records = earlier_run(old)
    narrow = spec_of(
        parameters=[
            {"name": "lr", "type": "float", "min": 1e-4, "max": 1e-1, "log": True},
            {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
            {"name": "layers", "type": "int", "min": 1, "max": 4},
        ]
    )
    # The first 5 completed before this experiment started; the rest after it.
    start = NOW - 100 + 4
    late = warm_trials(narrow, old, records, source="x", before=start)
    assert len(late.trials) == 5
    other = spec_of(objective={"metric": "acc", "direction": "minimize"})
    none = warm_trials(other, old, records, source="x", before=NOW)
    assert none.trials == [] and "it does not minimize 'acc'" in none.warnings[0]
    constrained = spec_of(constraints=[{"metric": "latency_ms", "max": 10}])
    lacking = warm_trials(constrained, old, records, source="x", before=NOW)
    assert lacking.trials == [] and lacking.skipped == 12
    assert "lack a constrained metric" in lacking.warnings[-1]


def test_a_warm_started_search_starts_from_what_the_earlier_one_learnt() -> None:
    spec = spec_of(
        search={"algorithm": "tpe", "seed": 3, "settings": {"nStartupTrials": 5}},
        budget={"maxTrials": 6, "parallelism": 1},
    )
    warm = warm_trials(spec, spec, earlier_run(spec, 30), source="experiment old", before=NOW)
    cold_world = World(Planner(spec, "new"))
    cold_world.run(succeed_scored)
    planner = Planner(spec, "new", warm)
    warm_world = World(planner)
    warm_world.run(succeed_scored)
    # The study holds the 30 told trials first; this experiment's indices start at 0.
    assert planner.search.warm_trials == 30
    assert [a.index for a in warm_world.started] == list(range(6))
    assert len(planner.search.study.get_trials()) == 36
    # TPE models from the first suggestion on (cold, the first 5 are random startup).
    cold = [score(p) for _, _, p in cold_world.suggested]
    hot = [score(p) for _, _, p in warm_world.suggested]
    assert sum(hot) / len(hot) > sum(cold) / len(cold)
    # Every trial names where the sampler's head start came from.
    assert {a.warm_start for a in warm_world.started} == {"experiment old: 30 trials"}


def test_a_warm_started_search_restarted_mid_run_suggests_the_same() -> None:
    spec = spec_of(
        search={"algorithm": "tpe", "seed": 4, "settings": {"nStartupTrials": 2}},
        budget={"maxTrials": 8, "parallelism": 2},
        warmStart={"experiment": "old"},
    )
    records = earlier_run(spec, 10)

    def planner() -> Planner:
        return Planner(spec, "new", warm_trials(spec, spec, records, source="old", before=NOW))

    straight = World(planner())
    straight.run(succeed_scored)
    first = World(planner())
    for _ in range(3):
        first.step(succeed_scored)
    second = World(planner(), list(first.views.values()))
    second.started = list(first.started)
    second.run(succeed_scored)
    assert second.suggested == straight.suggested


def test_an_unconstrained_source_gives_its_constrained_metrics_last_values() -> None:
    """The earlier experiment had no constraints: its trials carry none, but they did
    report the metric, and its last value is what this experiment's constraint reads."""
    old = spec_of()
    records = earlier_run(old, 6)
    constrained = spec_of(constraints=[{"metric": "latency_ms", "max": 10}])
    last = {r.name: {"latency_ms": 4.0 * r.parameters["layers"]} for r in records}
    warm = warm_trials(constrained, old, records, source="x", before=NOW, last_values=last)
    assert len(warm.trials) == 6 and warm.skipped == 0
    for t in warm.trials:
        assert t.violations == (4.0 * t.parameters["layers"] - 10,)
    # Without them, such trials cannot be judged and are left out.
    assert warm_trials(constrained, old, records, source="x", before=NOW).trials == []
