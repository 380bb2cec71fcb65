"""The algorithm vocabulary is written once, in the API, and everything else follows it."""

from __future__ import annotations

import re
from typing import Any, get_args

import pytest

import trialforge
from tests.factories import experiment_doc
from trialforge.api import crd, experiment, vocabulary
from trialforge.api import validation as api_validation
from trialforge.engine import plugins, template


def test_the_engine_registries_hold_exactly_the_api_names() -> None:
    assert list(plugins.SAMPLERS) == list(vocabulary.SEARCH_ALGORITHMS)
    assert list(plugins.PRUNERS) == list(vocabulary.EARLY_STOPPING_ALGORITHMS)
    # The plug-in's own name is what its errors say; it must be its key.
    assert all(p.name == name for name, p in plugins.SAMPLERS.items())
    assert all(p.name == name for name, p in plugins.PRUNERS.items())
    assert set(vocabulary.MULTI_OBJECTIVE_ALGORITHMS) < set(vocabulary.SEARCH_ALGORITHMS)


def test_the_models_and_the_crd_take_their_enums_from_the_vocabulary() -> None:
    assert get_args(experiment.SearchSpec.model_fields["algorithm"].annotation) == (
        vocabulary.SEARCH_ALGORITHMS
    )
    assert get_args(experiment.EarlyStoppingSpec.model_fields["algorithm"].annotation) == (
        vocabulary.EARLY_STOPPING_ALGORITHMS
    )
    schema = crd.experiment_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]["properties"]
    assert tuple(spec["search"]["properties"]["algorithm"]["enum"]) == (
        vocabulary.SEARCH_ALGORITHMS
    )
    assert tuple(spec["earlyStopping"]["properties"]["algorithm"]["enum"]) == (
        vocabulary.EARLY_STOPPING_ALGORITHMS
    )


def test_the_multi_objective_cel_rule_and_its_message_name_the_same_samplers() -> None:
    (rule,) = [r for r in experiment.CEL_RULES["ExperimentSpec"] if "several" in r["message"]]
    listed = re.search(r"in \[(.*)\]", rule["rule"])
    assert listed is not None
    assert [n.strip(" '") for n in listed.group(1).split(",")] == list(
        vocabulary.MULTI_OBJECTIVE_ALGORITHMS
    )
    named = re.split(r", | or ", rule["message"].split("use ", 1)[1])
    assert sorted(named) == sorted(vocabulary.MULTI_OBJECTIVE_ALGORITHMS)


def _two_objectives(algorithm: str) -> dict[str, Any]:
    doc = experiment_doc(
        objective=None,
        objectives=[
            {"metric": "acc", "direction": "maximize"},
            {"metric": "ms", "direction": "minimize"},
        ],
        search={"algorithm": algorithm, "seed": 1},
    )
    # Grid enumerates its space, which an unstepped float is not (a rule of its own).
    doc["spec"]["parameters"][0] = {"name": "lr", "type": "discrete", "values": [0.01, 0.1]}
    return doc


@pytest.mark.parametrize("algorithm", vocabulary.SEARCH_ALGORITHMS)
def test_several_objectives_are_refused_exactly_for_the_single_objective_samplers(
    algorithm: str,
) -> None:
    doc = _two_objectives(algorithm)
    if algorithm in vocabulary.MULTI_OBJECTIVE_ALGORITHMS:
        assert trialforge.load_experiment(doc).spec.multi_objective
        return
    with pytest.raises(trialforge.ExperimentInvalid) as info:
        trialforge.load_experiment(doc)
    assert [e.path for e in info.value.errors] == ["spec.search.algorithm"]


def test_the_public_loader_lists_the_engine_settings_errors_with_the_api_ones() -> None:
    doc = experiment_doc(search={"algorithm": "tpe", "settings": {"nStartupTrial": 3}})
    doc["spec"]["parameters"].append({"name": "lr", "type": "int", "min": 1, "max": 2})
    with pytest.raises(trialforge.ExperimentInvalid) as info:
        trialforge.load_experiment(doc)
    paths = {e.path for e in info.value.errors}
    assert paths == {"spec.parameters[3].name", "spec.search.settings.nStartupTrial"}
    # The API layer alone cannot ask Optuna which settings exist.
    with pytest.raises(api_validation.ExperimentInvalid) as alone:
        api_validation.load_experiment(doc)
    assert {e.path for e in alone.value.errors} == {"spec.parameters[3].name"}


def test_the_placeholder_validation_checks_is_the_one_that_is_filled_in() -> None:
    assert template.PLACEHOLDER is vocabulary.PLACEHOLDER is api_validation.PLACEHOLDER
    # A misspelt placeholder is an error at validation, never left in the command.
    doc = experiment_doc()
    doc["spec"]["trial"]["template"]["spec"]["containers"][0]["command"].append(
        "--d=${params.drop-out}"
    )
    with pytest.raises(trialforge.ExperimentInvalid, match=r"\$\{params.drop-out\} names no"):
        trialforge.load_experiment(doc)
    with pytest.raises(KeyError, match="names no parameter"):
        template.substitute_text("--d=${params.drop-out}", {"dropout": 0.1})
