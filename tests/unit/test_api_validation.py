"""The Experiment model: valid specs load; every invalid one names its field and reason."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from tests.factories import experiment_doc
from trialforge import ExperimentInvalid, load_experiment
from trialforge.api import load_experiment_file


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
            lambda s: s["trial"].update(maxDisruptions=-1),
            "spec.trial.maxDisruptions",
            "greater than or equal to 0",
        ),
        (
            lambda s: s["trial"].update(maxDisruptions="many"),
            "spec.trial.maxDisruptions",
            "integer",
        ),
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
    with pytest.raises(ExperimentInvalid, match="a YAML list, expected one Experiment"):
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


ROOT = Path(__file__).resolve().parents[2]


BASELINE = {"parameters": {"lr": 0.01, "opt": "adam", "layers": 2}}


def spec_errors(**spec: Any) -> dict[str, str]:
    try:
        load_experiment(experiment_doc(**spec))
    except ExperimentInvalid as exc:
        return {e.path: e.message for e in exc.errors}
    return {}


def arms(*names: str, **params: Any) -> list[dict[str, Any]]:
    base = {"lr": 0.01, "opt": "adam", "layers": 2} | params
    return [{"name": n, "parameters": dict(base)} for n in names]


def test_a_search_with_baseline_repeats_confirm_and_comparison_is_valid() -> None:
    spec = load_experiment(
        experiment_doc(
            baseline=BASELINE,
            repeats=3,
            confirm={"top": 2, "repeats": 5},
            comparison={"test": "mann-whitney", "alpha": 0.01},
            codeVersion="3f2a1c9",
            dataVersion="dvc:abc",
        )
    ).spec
    assert spec.repeats == 3 and spec.confirm is not None and spec.confirm.top == 2
    assert spec.comparison.test == "mann-whitney" and spec.comparison.alpha == 0.01
    assert spec.baseline is not None and spec.baseline.parameters["opt"] == "adam"


def test_an_arms_experiment_needs_no_max_trials_and_no_algorithm() -> None:
    doc = experiment_doc(arms=arms("a", "b"), repeats=4, search={"seed": 1})
    doc["spec"]["budget"] = {"parallelism": 4}
    spec = load_experiment(doc).spec
    assert spec.arms is not None and [a.name for a in spec.arms] == ["a", "b"]
    assert spec.budget.max_trials is None


def test_every_example_still_validates() -> None:
    folder = ROOT / "examples"
    specs = sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml"))
    # What the README and the Makefile tell a user to run is among them.
    named = {
        m for doc in ("README.md", "Makefile")
        for m in re.findall(r"examples/([\w.-]+\.ya?ml)", (ROOT / doc).read_text())
    }  # fmt: skip
    assert named and named <= {p.name for p in specs}, (named, specs)
    assert len(specs) >= 4, specs  # ab-test, digits-size-nsga2, digits-tpe-asha, smoke
    for path in specs:
        load_experiment_file(str(path))


@pytest.mark.parametrize(
    ("spec", "path", "words"),
    [
        # the baseline: every parameter, each inside its space
        ({"baseline": {"parameters": {"lr": 0.01, "opt": "adam"}}},
         "spec.baseline.parameters", "missing: layers"),
        ({"baseline": {"parameters": {**BASELINE["parameters"], "lr": 0.5}}},
         "spec.baseline.parameters.lr", "outside lr's space"),
        ({"baseline": {"parameters": {**BASELINE["parameters"], "opt": "rmsprop"}}},
         "spec.baseline.parameters.opt", "not one of opt's values"),
        ({"baseline": {"parameters": {**BASELINE["parameters"], "layers": 2.5}}},
         "spec.baseline.parameters.layers", "not an integer"),
        ({"baseline": {"parameters": {**BASELINE["parameters"], "depth": 3}}},
         "spec.baseline.parameters.depth", "names no parameter"),
        ({"baseline": {"parameters": {**BASELINE["parameters"], "lr": "fast"}}},
         "spec.baseline.parameters.lr", "not a number"),
        # arms
        ({"arms": arms("a", "b"), "search": {"algorithm": "tpe"}, "budget": {"parallelism": 1}},
         "spec.search.algorithm", "nothing to search"),
        ({"arms": arms("a", "b")}, "spec.budget.maxTrials", "remove budget.maxTrials"),
        ({"arms": arms("a"), "search": {"seed": 1}, "budget": {"parallelism": 1}},
         "spec.arms", "at least two configurations"),
        ({"arms": arms("a", "a"), "search": {"seed": 1}, "budget": {"parallelism": 1}},
         "spec.arms[1].name", "listed twice"),
        ({"arms": arms("a", "b", layers=9), "search": {"seed": 1}, "budget": {"parallelism": 1}},
         "spec.arms[0].parameters.layers", "outside layers's space"),
        ({"arms": arms("baseline"), "baseline": BASELINE, "search": {"seed": 1},
          "budget": {"parallelism": 1}}, "spec.arms[0].name", "names spec.baseline"),
        ({"arms": arms("a", "b"), "search": {"seed": 1}, "budget": {"parallelism": 1},
          "earlyStopping": {"algorithm": "asha"}}, "spec.earlyStopping.algorithm", "bias"),
        ({"arms": arms("a", "b"), "search": {"seed": 1}, "budget": {"parallelism": 1},
          "confirm": {"top": 1}}, "spec.confirm", "has no search"),
        ({"arms": [{"name": "bad name!", "parameters": {}}], "search": {"seed": 1},
          "budget": {"parallelism": 1}}, "spec.arms[0].name", "not a valid arm name"),
        # budget
        ({"budget": {"parallelism": 2}}, "spec.budget.maxTrials", "required"),
        ({"budget": {"maxTrials": 2, "parallelism": 7}, "repeats": 3},
         "spec.budget.parallelism", "more than maxTrials (2) x repeats (3)"),
        ({"repeats": 0}, "spec.repeats", "greater than or equal to 1"),
        # confirm and comparison
        ({"confirm": {"top": 9}}, "spec.confirm.top", "more than the 8 configurations"),
        ({"confirm": {"repeats": 1}}, "spec.confirm.repeats", "greater than or equal to 2"),
        ({"objectives": [{"metric": "a", "direction": "maximize"},
                         {"metric": "b", "direction": "minimize"}],
          "objective": None, "confirm": {"top": 1}}, "spec.confirm", "one objective"),
        ({"comparison": {"test": "ttest"}}, "spec.comparison.test", "not allowed"),
        ({"comparison": {"alpha": 0.9}}, "spec.comparison.alpha", "less than or equal to 0.5"),
    ],
)  # fmt: skip
def test_invalid_science_specs_name_the_field(spec: dict[str, Any], path: str, words: str) -> None:
    errors = spec_errors(**spec)
    assert path in errors, errors
    assert words in errors[path], errors[path]


def test_parallelism_may_exceed_max_trials_when_repeats_multiply_them() -> None:
    assert spec_errors(budget={"maxTrials": 2, "parallelism": 6}, repeats=3) == {}


def test_a_queue_and_suspend_policy_pause_go_together() -> None:
    """Pause with a Kueue queue deactivates the Workloads (kube/kueue.py): no refusal."""
    xp = load_experiment(experiment_doc(queue="team-a", suspend=True, suspendPolicy="Pause"))
    assert xp.spec.queue == "team-a" and xp.spec.suspend_policy == "Pause"


# -- conditional parameters (parameters[].when) ------------------------------------------

OPT = {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]}
MOMENTUM = {"name": "momentum", "type": "float", "min": 0.0, "max": 0.99, "when": {"opt": ["sgd"]}}
PLAIN_TEMPLATE = {
    "template": {"spec": {"containers": [{"name": "t", "image": "i", "command": ["train"]}]}}
}


def conditional_doc(parameters: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    return experiment_doc(parameters=parameters, trial=PLAIN_TEMPLATE, **more)


def test_a_conditional_space_loads() -> None:
    spec = load_experiment(conditional_doc([OPT, MOMENTUM])).spec
    assert spec.conditional
    assert spec.parameters[1].when == {"opt": ["sgd"]}
    assert spec.active({"opt": "sgd"}) == ["opt", "momentum"]
    assert spec.active({"opt": "adam"}) == ["opt"]


@pytest.mark.parametrize(
    ("parameters", "path", "words"),
    [
        (
            [OPT, {**MOMENTUM, "when": {"optimiser": ["sgd"]}}],
            "spec.parameters[1].when.optimiser",
            "names no parameter (parameters before it: opt)",
        ),
        (
            [MOMENTUM, OPT],
            "spec.parameters[0].when.opt",
            "parent 'opt' is defined after 'momentum' (parameters[1])",
        ),
        (
            [OPT, {**MOMENTUM, "when": {"opt": ["sgd", "rmsprop"]}}],
            "spec.parameters[1].when.opt[1]",
            "'rmsprop' is not a value 'opt' can take",
        ),
        (
            [
                {**OPT, "when": {"mode": ["a"]}},
                {"name": "mode", "type": "categorical", "values": ["a", "b"],
                 "when": {"opt": ["sgd"]}},
            ],
            "spec.parameters[0].when",
            "a cycle of conditions: opt -> mode -> opt",
        ),
        (
            [OPT, {"name": "lr", "type": "float", "min": 0.1, "max": 1.0},
             {**MOMENTUM, "when": {"lr": [0.5]}}],
            "spec.parameters[2].when.lr",
            "parent 'lr' is a float parameter; a condition needs a categorical or discrete",
        ),
        (
            [OPT, {"name": "nesterov", "type": "categorical", "values": [True, False],
                   "when": {"opt": ["sgd"]}},
             {**MOMENTUM, "when": {"opt": ["adam"], "nesterov": [True]}}],
            "spec.parameters[2].when",
            "'momentum' can never be active",
        ),
        (
            [OPT, {**MOMENTUM, "when": {"opt": []}}],
            "spec.parameters[1].when",
            "opt: list at least one value",
        ),
    ],
)  # fmt: skip
def test_bad_conditions_name_the_field(
    parameters: list[dict[str, Any]], path: str, words: str
) -> None:
    errors = errors_of(conditional_doc(parameters))
    assert path in errors, errors
    assert words in errors[path]


def test_a_baseline_sets_exactly_its_active_parameters() -> None:
    inactive = errors_of(
        conditional_doc([OPT, MOMENTUM], baseline={"parameters": {"opt": "adam", "momentum": 0.5}})
    )
    assert "is inactive in this configuration" in inactive["spec.baseline.parameters.momentum"]
    missing = errors_of(conditional_doc([OPT, MOMENTUM], baseline={"parameters": {"opt": "sgd"}}))
    assert "missing: momentum" in missing["spec.baseline.parameters"]
    load_experiment(conditional_doc([OPT, MOMENTUM], baseline={"parameters": {"opt": "adam"}}))


# -- constraints, initialPoints, warmStart ---------------------------------------------


@pytest.mark.parametrize(
    ("more", "path", "words"),
    [
        ({"constraints": [{"metric": "latency_ms"}]}, "spec.constraints[0].max",
         "needs max, min or both"),
        ({"constraints": [{"metric": "latency_ms", "max": 1, "min": 2}]},
         "spec.constraints[0].min", "min (2) is above max (1)"),
        ({"constraints": [{"metric": "lat", "max": 1}, {"metric": "lat", "min": 0}]},
         "spec.constraints[1].metric", "constrained twice"),
        ({"constraints": [{"metric": "acc", "max": 1}]}, "spec.constraints[0].metric",
         "'acc' is an objective"),
        ({"initialPoints": [{"lr": 5.0}]}, "spec.initialPoints[0].lr", "outside lr's space"),
        ({"initialPoints": [{"depth": 2}]}, "spec.initialPoints[0].depth", "names no parameter"),
        ({"initialPoints": [{"opt": "rmsprop"}]}, "spec.initialPoints[0].opt",
         "'rmsprop' is not one of opt's values"),
        ({"initialPoints": [{"lr": 0.01}, {"lr": 0.01}]}, "spec.initialPoints[1]",
         "listed earlier"),
        ({"initialPoints": [{"layers": n} for n in (1, 2, 3, 4)], "budget": {"maxTrials": 3}},
         "spec.initialPoints", "4 initial points but the search tries 3"),
        ({"warmStart": {}}, "spec.warmStart", "exactly one of experiment"),
        ({"warmStart": {"experiment": "a", "runDir": "b"}}, "spec.warmStart",
         "exactly one of experiment"),
        ({"warmStart": {"experiment": "Not_A_Name"}}, "spec.warmStart.experiment",
         "not a valid name"),
    ],
)  # fmt: skip
def test_bad_constraints_and_warm_starts_name_the_field(
    more: dict[str, Any], path: str, words: str
) -> None:
    errors = errors_of(experiment_doc(**more))
    assert path in errors, errors
    assert words in errors[path]


def test_an_initial_point_may_leave_parameters_to_the_sampler_but_not_set_inactive_ones() -> None:
    spec = load_experiment(
        conditional_doc([OPT, MOMENTUM], initialPoints=[{"opt": "sgd"}, {"opt": "adam"}])
    ).spec
    assert spec.initial_points == [{"opt": "sgd"}, {"opt": "adam"}]
    errors = errors_of(
        conditional_doc([OPT, MOMENTUM], initialPoints=[{"opt": "adam", "momentum": 0.1}])
    )
    assert "inactive" in errors["spec.initialPoints[0].momentum"]
