"""engine.comparison: what a plain search does not pay for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
