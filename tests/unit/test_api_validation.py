"""The Experiment model: valid specs load; every invalid one names its field and reason."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.factories import experiment_doc
from trialforge.api import ExperimentInvalid, load_experiment
from trialforge.api.base import parse_duration
from trialforge.api.trial import trial_name


def errors_of(doc: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ExperimentInvalid) as info:
        load_experiment(doc)
    return {e.path: e.message for e in info.value.errors}


def test_valid_experiment_loads_with_defaults() -> None:
    xp = load_experiment(experiment_doc())
    assert xp.name == "demo"
    assert xp.spec.budget.max_trials == 8
    assert xp.spec.early_stopping.algorithm == "none"
    assert xp.spec.trial.retries == 0
    assert xp.spec.trial.metrics.source == "stdout"
    assert [p.name for p in xp.spec.parameters] == ["lr", "opt", "layers"]
    assert not xp.spec.multi_objective


def test_wire_form_round_trips_in_camel_case() -> None:
    xp = load_experiment(experiment_doc(earlyStopping={"algorithm": "asha"}))
    wire = xp.to_wire()
    assert wire["spec"]["earlyStopping"] == {"algorithm": "asha"}
    assert "early_stopping" not in wire["spec"]
    assert load_experiment(wire).spec == xp.spec


def test_multi_objective_spec() -> None:
    xp = load_experiment(
        experiment_doc(
            objective=None,
            objectives=[
                {"metric": "acc", "direction": "maximize"},
                {"metric": "latency_ms", "direction": "minimize"},
            ],
            search={"algorithm": "nsga2"},
        )
    )
    assert xp.spec.multi_objective
    assert [o.metric for o in xp.spec.all_objectives] == ["acc", "latency_ms"]


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        # unknown fields, with a suggestion
        (
            lambda s: s["budget"].update(maxTrial=3),
            "spec.budget.maxTrial",
            "did you mean 'maxTrials'",
        ),
        (lambda s: s.update(serch={}), "spec.serch", "unknown field"),
        # min >= max
        (
            lambda s: s["parameters"][0].update(min=0.5, max=0.1),
            "spec.parameters[0].max",
            "must be greater than min",
        ),
        (
            lambda s: s["parameters"][2].update(min=4, max=4),
            "spec.parameters[2].max",
            "must be greater than min",
        ),
        # log with min <= 0
        (
            lambda s: s["parameters"][0].update(min=0.0),
            "spec.parameters[0].log",
            "log scale needs min > 0",
        ),
        # empty and duplicate categorical values
        (
            lambda s: s["parameters"][1].update(values=[]),
            "spec.parameters[1].values",
            "at least 1",
        ),
        (
            lambda s: s["parameters"][1].update(values=["sgd", "sgd"]),
            "spec.parameters[1].values",
            "listed twice",
        ),
        # unknown parameter type
        (
            lambda s: s["parameters"][1].update(type="choice"),
            "spec.parameters[1]",
            "type must be one of",
        ),
        # parallelism > maxTrials
        (
            lambda s: s["budget"].update(parallelism=9),
            "spec.budget.parallelism",
            "more than maxTrials (8)",
        ),
        (
            lambda s: s["budget"].update(maxTrials=0),
            "spec.budget.maxTrials",
            "greater than or equal to 1",
        ),
        (lambda s: s["budget"].update(deadline="soon"), "spec.budget.deadline", "pattern"),
        (lambda s: s["trial"].update(timeout="10 minutes"), "spec.trial.timeout", "pattern"),
        (
            lambda s: s["search"].update(algorithm="bayes"),
            "spec.search.algorithm",
            "'bayes' is not allowed",
        ),
        (lambda s: s.update(budget={"parallelism": 2}), "spec.budget.maxTrials", "required"),
        (
            lambda s: s["trial"].update(workers=0),
            "spec.trial.workers",
            "greater than or equal to 1",
        ),
        (
            lambda s: s["trial"].update(metrics={"format": "regex", "pattern": "(unclosed"}),
            "spec.trial.metrics.pattern",
            "not a valid regular expression",
        ),
        (
            lambda s: s["trial"].update(metrics={"format": "regex", "pattern": "loss=([0-9.]+)"}),
            "spec.trial.metrics.pattern",
            "named groups",
        ),
        (
            lambda s: s["parameters"][0].update(name="learning-rate"),
            "spec.parameters[0].name",
            "not a valid name",
        ),
    ],
)
def test_shape_errors_name_the_field(change: Any, path: str, words: str) -> None:
    doc = experiment_doc()
    change(doc["spec"])
    errors = errors_of(doc)
    assert path in errors, errors
    assert words in errors[path]


@pytest.mark.parametrize(
    ("overrides", "path", "words"),
    [
        (
            {"search": {"algorithm": "grid"}},
            "spec.parameters[0]",
            "grid search cannot enumerate float parameter 'lr'",
        ),
        (
            {
                "objective": None,
                "objectives": [
                    {"metric": "acc", "direction": "maximize"},
                    {"metric": "ms", "direction": "minimize"},
                ],
                "search": {"algorithm": "cmaes"},
            },
            "spec.search.algorithm",
            "cmaes cannot optimise several objectives",
        ),
        (
            {
                "objective": None,
                "objectives": [
                    {"metric": "acc", "direction": "maximize"},
                    {"metric": "ms", "direction": "minimize"},
                ],
                "earlyStopping": {"algorithm": "asha"},
            },
            "spec.earlyStopping.algorithm",
            "cannot be used with several objectives",
        ),
        ({"objective": None}, "spec.objective", "required"),
        (
            {"objectives": [{"metric": "x", "direction": "minimize"}]},
            "spec.objectives",
            "not both",
        ),
        (
            {"search": {"algorithm": "tpe", "settings": {"nStartupTrial": 3}}},
            "spec.search.settings.nStartupTrial",
            "n_startup_trials",
        ),
        (
            {"earlyStopping": {"algorithm": "asha", "settings": {"eta": 3}}},
            "spec.earlyStopping.settings.eta",
            "reduction_factor",
        ),
        (
            {
                "trial": {
                    "metrics": {"source": "file"},
                    "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
                }
            },
            "spec.trial.metrics.path",
            "needs the path",
        ),
        (
            {
                "trial": {
                    "template": {
                        "spec": {
                            "containers": [
                                {"name": "t", "image": "i", "command": ["x", "${params.momentum}"]}
                            ]
                        }
                    }
                }
            },
            "spec.trial.template.spec.containers[0].command[1]",
            "${params.momentum} names no parameter",
        ),
        (
            {
                "trial": {
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "t",
                                    "image": "i",
                                    "env": [{"name": "A", "value": "${params.nope}"}],
                                }
                            ]
                        }
                    }
                }
            },
            "spec.trial.template.spec.containers[0].env[0].value",
            "names no parameter",
        ),
        (
            {"trial": {"template": {"spec": {"containers": [{"name": "t", "command": ["x"]}]}}}},
            "spec.trial.template.spec.containers[0].image",
            "required",
        ),
        (
            {"trial": {"template": {"spec": {"containers": []}}}},
            "spec.trial.template.spec.containers",
            "at least one container",
        ),
    ],
)
def test_cross_field_errors_name_the_field(
    overrides: dict[str, Any], path: str, words: str
) -> None:
    errors = errors_of(experiment_doc(**overrides))
    assert path in errors, errors
    assert words in errors[path]


def test_duplicate_parameter_names() -> None:
    doc = experiment_doc()
    doc["spec"]["parameters"].append(copy.deepcopy(doc["spec"]["parameters"][0]))
    assert "defined twice" in errors_of(doc)["spec.parameters[3].name"]


def test_every_error_is_reported_at_once() -> None:
    doc = experiment_doc()
    doc["spec"]["budget"] = {"maxTrials": 2, "parallelism": 3, "maxTrail": 1}
    doc["spec"]["parameters"][0]["max"] = 1e-5
    errors = errors_of(doc)
    assert {"spec.budget.parallelism", "spec.budget.maxTrail", "spec.parameters[0].max"} <= set(
        errors
    )


def test_top_level_must_be_a_mapping_and_an_experiment() -> None:
    with pytest.raises(ExperimentInvalid, match="must be a YAML mapping"):
        load_experiment(["not", "a", "mapping"])
    doc = experiment_doc()
    doc["kind"] = "Trial"
    assert "spec" not in errors_of(doc) and "kind" in errors_of(doc)


def test_grid_accepts_bounded_parameters() -> None:
    doc = experiment_doc(search={"algorithm": "grid"})
    doc["spec"]["parameters"][0] = {
        "name": "lr",
        "type": "float",
        "min": 0.1,
        "max": 0.3,
        "step": 0.1,
    }
    assert load_experiment(doc).spec.search.algorithm == "grid"


def test_discrete_values_keep_integers() -> None:
    doc = experiment_doc()
    doc["spec"]["parameters"].append({"name": "batch", "type": "discrete", "values": [32, 64, 0.5]})
    values = load_experiment(doc).spec.parameters[-1].values
    assert values == [32, 64, 0.5] and isinstance(values[0], int)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("45m", 2700), ("1h30m", 5400), ("2d", 172800), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_trial_names_are_deterministic() -> None:
    assert trial_name("mnist", 3) == "mnist-3"
    assert trial_name("mnist", 3, 2) == "mnist-3-r2"


def test_the_public_report_function_survives_every_internal_import() -> None:
    """`trialforge.report()` is the trainer's API; no subpackage may shadow it."""
    import importlib
    import pkgutil

    import trialforge

    for module in pkgutil.walk_packages(trialforge.__path__, "trialforge."):
        importlib.import_module(module.name)
    assert callable(trialforge.report) and trialforge.report.__module__ == "trialforge.client"
    assert callable(trialforge.seed) and callable(trialforge.parameters)
