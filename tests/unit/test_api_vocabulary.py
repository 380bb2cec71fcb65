"""The algorithm vocabulary is written once, in the API, and everything else follows it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
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
        # One this Python cannot run (gp without torch) is refused for that alone.
        unavailable = plugins.unavailable(algorithm)  # type: ignore[arg-type]
        load = api_validation.load_experiment if unavailable else trialforge.load_experiment
        assert load(doc).spec.multi_objective
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


ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def names(requirements: list[str]) -> set[str]:
    """The distributions a list of requirements names (torch>=2.0 -> torch)."""
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def _installed_by_default() -> tuple[set[str], set[str]]:
    """The distributions `pip install trialforge` installs, and those the operator image
    installs (the same, with the extras its Dockerfile names)."""
    project = PROJECT
    default = names(project["dependencies"])
    dockerfile = (ROOT / "images" / "operator" / "Dockerfile").read_text()
    extras = re.findall(r"trialforge-\*\.whl\)\[([a-z,-]+)\]", dockerfile)
    assert extras, "the operator Dockerfile installs the trialforge wheel (with extras)"
    image = set(default)
    for extra in ",".join(extras).split(","):
        image |= names(project["optional-dependencies"][extra])
    return default, image


def test_the_algorithms_said_to_need_an_optional_package_are_exactly_those_it_lacks() -> None:
    default, image = _installed_by_default()
    needs = {a: p.requires for a, p in plugins.SAMPLERS.items() if p.requires}
    assert needs, "some sampler imports an optional module (gp: torch, cmaes: cmaes)"
    for algorithm, module in needs.items():
        missing = module not in default or module not in image
        assert (algorithm in vocabulary.NEEDS_OPTIONAL_PACKAGE) == missing, (algorithm, module)
    for algorithm, (module, _, extra) in vocabulary.NEEDS_OPTIONAL_PACKAGE.items():
        assert needs[algorithm] == module
        # The extra the message tells the user to install does install the module.
        assert module in names(PROJECT["optional-dependencies"][extra])


def test_the_crd_refuses_the_algorithms_the_operator_image_cannot_run() -> None:
    rules = crd.experiment_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec_rules = rules["properties"]["spec"]["x-kubernetes-validations"]
    for algorithm in vocabulary.NEEDS_OPTIONAL_PACKAGE:
        [rule] = [r for r in spec_rules if f"!= '{algorithm}'" in r["rule"]]
        assert rule["fieldPath"] == ".search.algorithm"
        assert rule["message"] == vocabulary.missing_package_reason(algorithm, on_cluster=True)
        assert "operator image" in rule["message"] and algorithm not in rule["message"].split(
            "use one of "
        )[1].split(", ")
