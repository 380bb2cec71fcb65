"""spec.baseline, repeats, arms, confirm and comparison: what is valid, and the errors (issue 8)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.factories import experiment_doc
from trialforge.api import ExperimentInvalid, load_experiment, load_experiment_file
from trialforge.api.crd import all_crds
from trialforge.api.trial import TrialSpec

ROOT = Path(__file__).resolve().parents[2]
BASELINE = {"parameters": {"lr": 0.01, "opt": "adam", "layers": 2}}


def errors_of(**spec: Any) -> dict[str, str]:
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
    errors = errors_of(**spec)
    assert path in errors, errors
    assert words in errors[path], errors[path]


def test_parallelism_may_exceed_max_trials_when_repeats_multiply_them() -> None:
    assert errors_of(budget={"maxTrials": 2, "parallelism": 6}, repeats=3) == {}


def test_crds_carry_the_new_fields_and_their_rules() -> None:
    xp = all_crds()["experiments.trialforge.io.yaml"]
    schema = xp["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    for field in ("baseline", "repeats", "arms", "confirm", "comparison"):
        assert field in spec["properties"], field
    assert spec["properties"]["comparison"]["properties"]["test"]["enum"] == [
        "welch", "mann-whitney", "auto",
    ]  # fmt: skip
    rules = {r["fieldPath"]: r["rule"] for r in spec["x-kubernetes-validations"]}
    assert "has(self.arms)" in rules[".budget.maxTrials"]
    assert "self.repeats" in rules[".budget.parallelism"]
    # Changing the design mid-run would make trials incomparable.
    for field in ("baseline", "repeats", "arms"):
        assert spec["properties"][field]["x-kubernetes-validations"][0]["rule"] == (
            "self == oldSelf"
        )
    status = schema["properties"]["status"]["properties"]
    assert status["comparison"]["items"]["x-kubernetes-preserve-unknown-fields"] is True
    trial = all_crds()["trials.trialforge.io.yaml"]["spec"]["versions"][0]["schema"]
    tspec = trial["openAPIV3Schema"]["properties"]["spec"]["properties"]
    for field in ("role", "config", "repeat", "searchIndex", "codeVersion", "dataVersion"):
        assert field in tspec, field


def test_trial_spec_records_its_place_in_the_design() -> None:
    spec = TrialSpec.model_validate(
        {"experiment": "x", "index": 3, "parameters": {"lr": 0.1}, "seed": 9, "role": "confirm",
         "config": "c4", "repeat": 2, "searchIndex": 4, "codeVersion": "abc"}
    )  # fmt: skip
    assert spec.role == "confirm" and spec.search_index == 4 and spec.code_version == "abc"
    with pytest.raises(ValueError):
        TrialSpec.model_validate(
            {"experiment": "x", "index": 0, "parameters": {}, "seed": 1, "role": "winner"}
        )
