"""engine.changes: one spec-change policy for a cluster Experiment and a local resume."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic.alias_generators import to_camel

from tests.factories import experiment_doc
from trialforge.api import load_experiment
from trialforge.api.crd import all_crds
from trialforge.api.experiment import IMMUTABLE_FIELDS
from trialforge.engine.changes import changed_fields, refused_changes, search_fingerprint


def spec(doc: dict[str, Any]) -> Any:
    return load_experiment(doc).spec


def test_a_budget_suspend_or_template_change_is_taken() -> None:
    doc = experiment_doc()
    new = copy.deepcopy(doc)
    new["spec"]["budget"]["maxTrials"] = 20
    new["spec"]["suspend"] = True
    new["spec"]["trial"]["template"]["spec"]["containers"][0]["image"] = "registry.example/t:2"
    assert refused_changes(spec(doc), spec(new)) == []
    assert changed_fields(spec(doc), spec(new)) == ["spec.budget", "spec.trial", "spec.suspend"]
    assert search_fingerprint(spec(doc)) == search_fingerprint(spec(new))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("search", {"algorithm": "random", "seed": 7}),
        (
            "parameters",
            [
                {"name": "lr", "type": "float", "min": 1e-3, "max": 1e-1},
                {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
            ],
        ),
        ("objective", {"metric": "acc", "direction": "minimize"}),
        ("repeats", 3),
    ],
)
def test_a_change_of_what_the_experiment_is_is_refused_by_name(field: str, value: Any) -> None:
    doc = experiment_doc()
    new = experiment_doc(**{field: value})
    refused = refused_changes(spec(doc), spec(new))
    assert refused == [f"spec.{field}: spec.{field} cannot change once the experiment exists"]


def test_an_early_stopping_change_rebuilds_the_search() -> None:
    doc = experiment_doc()
    new = experiment_doc(earlyStopping={"algorithm": "median"})
    assert refused_changes(spec(doc), spec(new)) == []
    assert search_fingerprint(spec(doc)) != search_fingerprint(spec(new))


def test_the_api_server_refuses_exactly_the_fields_the_policy_refuses() -> None:
    """The CRD's CEL rules and a local resume share IMMUTABLE_FIELDS."""
    schema = all_crds()["experiments.trialforge.io.yaml"]["spec"]["versions"][0]["schema"]
    props = schema["openAPIV3Schema"]["properties"]["spec"]["properties"]
    immutable = {
        name
        for name, prop in props.items()
        if any(
            "cannot change" in v.get("message", "")
            for v in prop.get("x-kubernetes-validations", [])
        )
    }

    assert immutable == {to_camel(f) for f in IMMUTABLE_FIELDS["ExperimentSpec"]}
