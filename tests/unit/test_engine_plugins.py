"""engine/plugins.py: the samplers and pruners behind our algorithm names."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from typing import Any

import pytest

from tests.factories import World, experiment_doc
from trialforge.api import load_experiment
from trialforge.api.experiment import ExperimentSpec
from trialforge.engine.errors import EngineError
from trialforge.engine.planner import Planner


def spec_of(**overrides: Any) -> ExperimentSpec:
    return load_experiment(experiment_doc(**overrides)).spec


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


def test_a_setting_without_capitals_is_the_keyword_as_written() -> None:
    from trialforge.engine.plugins import keyword, make_sampler

    assert keyword("nStartupTrials") == "n_startup_trials"
    assert keyword("n_startup_trials") == "n_startup_trials"
    assert keyword("sigma0") == "sigma0"  # to_snake alone made it sigma_0, which CMA-ES refuses
    sampler = make_sampler("cmaes", 1, {"sigma0": 0.2}, 1)
    assert sampler._sigma0 == 0.2
