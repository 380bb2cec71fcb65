"""engine/template.py: parameters filled into the pod template, and the trial's environment."""

from __future__ import annotations

import json

import pytest

from tests.factories import experiment_doc
from trialforge.api import load_experiment
from trialforge.engine.template import (
    placeholder_values,
    substitute_container,
    substitute_text,
    trial_environment,
)


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


def test_an_inactive_parameter_fills_in_as_an_empty_string() -> None:
    """A conditional parameter a trial lacks (inactive) is '' in commands and absent
    from TRIALFORGE_PARAMS; validation has refused names that are no parameter."""
    spec = load_experiment(
        experiment_doc(
            parameters=[
                {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
                {"name": "momentum", "type": "float", "min": 0, "max": 1, "when": {"opt": ["sgd"]}},
                {"name": "lr", "type": "float", "min": 0.001, "max": 0.1},
            ]
        )
    ).spec
    parameters = {"opt": "adam", "lr": 0.01}
    filled = placeholder_values(spec, parameters)
    assert substitute_text("--momentum=${params.momentum}", filled) == "--momentum="
    assert substitute_text("${params.opt}", filled) == "adam"
    with pytest.raises(KeyError, match="nope"):  # a name that is no parameter stays an error
        substitute_text("${params.nope}", filled)
    env = trial_environment("x", "x-0", parameters, 1, 0)
    assert json.loads(env["TRIALFORGE_PARAMS"]) == {"lr": 0.01, "opt": "adam"}
