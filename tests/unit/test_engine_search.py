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
