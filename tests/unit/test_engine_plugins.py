"""engine/plugins.py: the samplers and pruners behind our algorithm names."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from typing import Any

import optuna
import pytest

from tests.factories import NOW, World, experiment_doc, running_view, succeed_scored
from trialforge.api import load_experiment, vocabulary
from trialforge.api.experiment import ExperimentSpec
from trialforge.api.validation import value_error
from trialforge.engine import plugins
from trialforge.engine.errors import EngineError
from trialforge.engine.planner import Planner, StartTrial, StopTrial
from trialforge.engine.record import TrialRecord
from trialforge.engine.validation import ExperimentInvalid
from trialforge.engine.validation import load_experiment as load_checked


def spec_of(**overrides: Any) -> ExperimentSpec:
    return load_experiment(experiment_doc(**overrides)).spec


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_gp_without_torch_says_what_to_install() -> None:
    # The engine refuses to build it (a spec that skipped validation) ...
    spec = ExperimentSpec.model_validate(experiment_doc(search={"algorithm": "gp"})["spec"])
    with pytest.raises(EngineError, match=r"needs PyTorch \(the Python package 'torch'\)"):
        Planner(spec, "x")
    # ... and validate, run and the operator refuse it by field, saying what to install.
    with pytest.raises(ExperimentInvalid) as info:
        load_checked(experiment_doc(search={"algorithm": "gp"}))
    [error] = info.value.errors
    assert error.path == "spec.search.algorithm"
    assert "pip install 'trialforge[gp]'" in error.message and "tpe" in error.message


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


# -- every name the API accepts works where it is accepted ---------------------------

# A space every sampler can walk, grid included (a float with a step).
SPACE = [
    {"name": "lr", "type": "float", "min": 0.01, "max": 0.1, "step": 0.01},
    {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
    {"name": "layers", "type": "int", "min": 1, "max": 4},
]


def _doc(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"parameters": SPACE, "budget": {"maxTrials": 6, "parallelism": 2}}
    return experiment_doc(**{**fields, **overrides})


@pytest.mark.parametrize("algorithm", vocabulary.SEARCH_ALGORITHMS)
def test_every_search_algorithm_the_api_accepts_suggests_through_the_engine(
    algorithm: str,
) -> None:
    doc = _doc(search={"algorithm": algorithm, "seed": 3})
    why = plugins.unavailable(algorithm)  # type: ignore[arg-type]
    if why is not None:
        # Not offered here: validate (and so run and the operator) refuses it by field,
        # and only an optional package may be missing, never a dependency.
        assert algorithm in vocabulary.NEEDS_OPTIONAL_PACKAGE
        with pytest.raises(ExperimentInvalid) as info:
            load_checked(doc)
        assert [(e.path, e.message) for e in info.value.errors] == [("spec.search.algorithm", why)]
        return
    spec = load_checked(doc).spec
    planner = Planner(spec, "every-sampler")
    world = World(planner)
    plan = world.run(succeed_scored)
    # The named sampler suggested them (not a fallback), and not one point over and
    # over (QMC's first point is drawn at random and may meet its sequence: not all
    # six need differ in a space of 80 points).
    assert isinstance(planner.search.study.sampler, plugins.SAMPLERS[algorithm].cls)  # type: ignore[index]
    configs = [tuple(sorted(p.items())) for _, _, p in world.suggested]
    assert len(configs) == 6 and len(set(configs)) >= 4, configs
    for _, _, params in world.suggested:
        assert list(params) == ["lr", "opt", "layers"]
        for name, value in params.items():
            assert value_error(spec.parameter(name), value) is None, (name, value)
    assert plan.finished is not None and plan.finished.reason == "BudgetExhausted"
    assert plan.best is not None and plan.counts["succeeded"] == 6


PRUNER_SETTINGS: dict[str, dict[str, Any]] = {
    "none": {},
    "median": {"nStartupTrials": 2},
    "asha": {"minResource": 1, "reductionFactor": 2},
    "hyperband": {"minResource": 1, "maxResource": 8, "reductionFactor": 2},
}


def quality(index: int) -> float:
    """Trial ``index``'s final accuracy: even trials learn (0.8-0.9), odd ones barely (0.05)."""
    return 0.05 if index % 2 else 0.8 + 0.01 * index


def run_curves(planner: Planner, steps: int = 8) -> dict[int, int]:
    """Run the planner's experiment as a cluster would: every round each running trial
    reports one more step of its curve (acc = quality * step / steps) and, after
    ``steps``, succeeds. Returns each pruned trial's index and the step it was stopped at."""
    views: dict[str, TrialRecord] = {}
    pruned: dict[int, int] = {}
    for _ in range(500):
        plan = planner.plan(list(views.values()), now=NOW)
        for action in plan.actions:
            if isinstance(action, StopTrial):
                view = views[action.name]
                views[action.name] = replace(view, phase=action.phase)
                if action.phase == "Pruned":
                    pruned[view.index] = max(view.intermediate)
            elif isinstance(action, StartTrial):
                name = f"x-{action.index}"
                views[name] = replace(running_view(name, action), intermediate={})
        if plan.finished is not None:
            return pruned
        for name, view in views.items():
            if view.phase != "Running":
                continue
            step = len(view.intermediate) + 1
            curve = {**view.intermediate, step: quality(view.index) * step / steps}
            views[name] = replace(view, intermediate=curve)
            if step == steps:
                views[name] = replace(views[name], phase="Succeeded", values=(curve[step],))
    raise AssertionError("the experiment never finished")


@pytest.mark.parametrize("algorithm", vocabulary.EARLY_STOPPING_ALGORITHMS)
def test_every_early_stopping_algorithm_the_api_accepts_prunes_through_the_engine(
    algorithm: str,
) -> None:
    doc = _doc(
        search={"algorithm": "random", "seed": 3},
        earlyStopping={"algorithm": algorithm, "settings": PRUNER_SETTINGS[algorithm]},
        budget={"maxTrials": 16, "parallelism": 2},
    )
    spec = load_checked(doc).spec
    pruned = run_curves(Planner(spec, "every-pruner"))
    if algorithm == "none":
        assert pruned == {}
        return
    # It stops trials that trail, and only those: a learning trial is never cut.
    assert pruned, f"{algorithm} pruned nothing"
    assert all(i % 2 for i in pruned), pruned
    assert all(step < 8 for step in pruned.values()), pruned


def optuna_hyperband(
    name: str, settings: dict[str, Any], n: int, parallelism: int, steps: int = 8
) -> dict[int, int]:
    """The same experiment as :func:`run_curves`, told to a plain Optuna study with
    Optuna's HyperbandPruner through its own ask/tell API, round by round in the order
    the engine hears it: trials that ended first (their last steps, then tell), then the
    running ones by index (a pruned one is told PRUNED with the next round)."""
    pruner = optuna.pruners.HyperbandPruner(
        min_resource=settings["minResource"],
        max_resource=settings["maxResource"],
        reduction_factor=settings["reductionFactor"],
    )
    study = optuna.create_study(
        study_name=name, direction="maximize", pruner=pruner,
        sampler=optuna.samplers.RandomSampler(seed=0),
    )  # fmt: skip
    trials: dict[int, optuna.Trial] = {}
    progress: dict[int, int] = {}  # index -> steps reported by the world
    heard: dict[int, int] = {}  # index -> steps told to the study
    running: list[int] = []
    stopping: list[int] = []
    pruned: dict[int, int] = {}

    def hear(i: int, upto: int) -> bool:
        verdict = False
        for step in range(heard[i] + 1, upto + 1):
            trials[i].report(quality(i) * step / steps, step)
            verdict = trials[i].should_prune() or verdict
        heard[i] = upto
        return verdict

    while len(trials) < n or running:
        ended = [i for i in running if progress[i] == steps]
        for i in ended:
            hear(i, steps)
            study.tell(trials[i], quality(i))
            running.remove(i)
        for i in stopping:
            study.tell(trials[i], state=optuna.trial.TrialState.PRUNED)
        stopping = []
        for i in sorted(running):
            if hear(i, progress[i]):
                pruned[i] = progress[i]
                stopping.append(i)
                running.remove(i)
        while len(running) < parallelism and len(trials) < n:
            i = len(trials)
            trials[i] = study.ask()
            progress[i], heard[i] = 0, 0
            running.append(i)
        for i in running:
            progress[i] += 1
    return pruned


def test_hyperband_prunes_as_optunas_hyperband_pruner_decides() -> None:
    settings = PRUNER_SETTINGS["hyperband"]
    doc = _doc(
        search={"algorithm": "random", "seed": 3},
        earlyStopping={"algorithm": "hyperband", "settings": settings},
        budget={"maxTrials": 24, "parallelism": 3},
    )
    ours = run_curves(Planner(load_checked(doc).spec, "hb-study"))
    theirs = optuna_hyperband("hb-study", settings, n=24, parallelism=3)
    assert ours == theirs
    # Not a vacuous agreement: Hyperband's brackets (crc32 of the study name and the
    # trial number) cut trials at more than one rung, and spare some trailing ones.
    assert len(set(ours.values())) >= 2, ours
    assert 0 < len(ours) < 12, ours


def test_cma_es_takes_its_x0_and_sigma0_settings() -> None:
    # Digits start no word: x0 and sigma0 are CmaEsSampler's own keywords.
    doc = _doc(
        search={"algorithm": "cmaes", "seed": 1,
                "settings": {"x0": {"lr": 0.05, "layers": 2}, "sigma0": 0.01}},
        parameters=[SPACE[0], SPACE[2]],
    )  # fmt: skip
    doc["spec"]["trial"]["template"]["spec"]["containers"][0]["command"] = ["python", "t.py"]
    spec = load_checked(doc).spec
    sampler = plugins.make_sampler("cmaes", 1, spec.search.settings, 1)
    assert sampler._x0 == {"lr": 0.05, "layers": 2} and sampler._sigma0 == 0.01
    assert plugins.snake("nStartupTrials") == "n_startup_trials"
    with pytest.raises(ExperimentInvalid, match=r"spec.search.settings.sigma0: .*float"):
        load_checked({**doc, "spec": {**doc["spec"], "search": {
            "algorithm": "cmaes", "settings": {"sigma0": "wide"}}}})  # fmt: skip


def test_a_setting_without_capitals_is_the_keyword_as_written() -> None:
    from trialforge.engine.plugins import make_sampler, snake

    assert snake("nStartupTrials") == "n_startup_trials"
    assert snake("n_startup_trials") == "n_startup_trials"
    assert snake("sigma0") == "sigma0"  # to_snake alone made it sigma_0, which CMA-ES refuses
    sampler = make_sampler("cmaes", 1, {"sigma0": 0.2}, 1)
    assert sampler._sigma0 == 0.2
