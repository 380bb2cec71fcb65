"""engine/template.py: parameters filled into the pod template, and the trial's environment."""

from __future__ import annotations

import json

from trialforge.engine.template import substitute_container, substitute_text, trial_environment


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
    parameters = {"opt": "adam", "lr": 0.01}
    assert substitute_text("--momentum=${params.momentum}", parameters) == "--momentum="
    env = trial_environment("x", "x-0", parameters, 1, 0)
    assert json.loads(env["TRIALFORGE_PARAMS"]) == {"lr": 0.01, "opt": "adam"}
