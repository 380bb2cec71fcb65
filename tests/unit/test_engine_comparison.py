"""engine.comparison: what a plain search does not pay for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trialforge.engine.comparison import Group, comparison_rows

ROOT = Path(__file__).resolve().parents[2]


def test_a_plain_search_never_imports_scipy() -> None:
    # SciPy's statistics take seconds to import; only an experiment that compares needs them.
    code = """
import sys, time
from tests.factories import experiment_doc
from trialforge.api import load_experiment
from trialforge.engine.planner import Planner, StartTrial
from trialforge.engine.record import TrialRecord

spec = load_experiment(experiment_doc(search={"algorithm": "random", "seed": 1})).spec
planner = Planner(spec, "x")
views = []
for _ in range(40):
    plan = planner.plan(views, now=time.time())
    if plan.finished is not None:
        break
    for a in plan.of(StartTrial):
        views.append(TrialRecord(f"x-{a.index}", a.index, 0, "Succeeded", a.parameters, a.seed,
                                 values=(0.5,), search_state=a.search_state))
assert plan.finished is not None and plan.comparison is None
print("scipy" in sys.modules)
"""
    env = {"PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True
    )
    assert out.stdout.strip() == "False"


def _rows(values: dict[str, np.ndarray], test: str = "welch") -> list[dict[str, Any]]:
    groups = [Group(n, {}, tuple(float(x) for x in v)) for n, v in values.items()]
    return comparison_rows(groups, "base", "acc", "maximize", test=test, bootstrap_resamples=0)


@pytest.mark.parametrize("test", ["welch", "mann-whitney", "auto"])
def test_comparison_rows_false_positive_rate_is_alpha(test: str) -> None:
    rng = np.random.default_rng(21)
    decided = 0
    sims = 1000
    for _ in range(sims):
        rows = _rows({"base": rng.normal(0.8, 0.02, 8), "c": rng.normal(0.8, 0.02, 8)}, test)
        decided += rows[1]["verdict"] != "inconclusive"
    assert 0.03 <= decided / sims <= 0.07


def test_comparison_rows_power_at_a_large_effect() -> None:
    rng = np.random.default_rng(22)
    sims = 300
    better = sum(
        # d = 1.5 with n = 10 per arm: the t-test's power is about 0.93.
        _rows({"base": rng.normal(0.80, 0.02, 10), "c": rng.normal(0.83, 0.02, 10)})[1]["verdict"]
        == "better"
        for _ in range(sims)
    )
    assert better / sims > 0.8


def test_anova_across_arms_keeps_its_error_rate_under_the_null() -> None:
    rng = np.random.default_rng(23)
    sims = 1000
    rejected = 0
    for _ in range(sims):
        rows = _rows({n: rng.normal(0.8, 0.02, 6) for n in ("base", "a", "b", "c")})
        omnibus = next(r for r in rows if r["role"] == "omnibus")
        rejected += omnibus["pValue"] < 0.05
    assert 0.03 <= rejected / sims <= 0.07
