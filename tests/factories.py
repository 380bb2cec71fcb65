"""Small builders used across the tests: Experiment documents, a scripted world."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

BASE: dict[str, Any] = {
    "apiVersion": "trialforge.io/v1alpha1",
    "kind": "Experiment",
    "metadata": {"name": "demo"},
    "spec": {
        "objective": {"metric": "acc", "direction": "maximize"},
        "parameters": [
            {"name": "lr", "type": "float", "min": 1e-4, "max": 1e-1, "log": True},
            {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
            {"name": "layers", "type": "int", "min": 1, "max": 4},
        ],
        "search": {"algorithm": "tpe", "seed": 7},
        "budget": {"maxTrials": 8, "parallelism": 2},
        "trial": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "registry.example/t:1",
                            "command": [
                                "python",
                                "t.py",
                                "--lr=${params.lr}",
                                "--opt=${params.opt}",
                            ],
                        }
                    ]
                }
            }
        },
    },
}


def running_view(name: str, action: Any) -> Any:
    """The Trial an adapter records for a StartTrial: Running, with its design fields."""
    from trialforge.engine.record import TrialRecord

    return TrialRecord(
        name, action.index, action.attempt, "Running", action.parameters, action.seed,
        search_state=action.search_state, role=action.role, config=action.config,
        repeat=action.repeat, search_index=action.search_index,
    )  # fmt: skip


def experiment_doc(**spec_overrides: Any) -> dict[str, Any]:
    """A valid Experiment with some spec fields replaced (None deletes a field)."""
    doc = copy.deepcopy(BASE)
    for key, value in spec_overrides.items():
        if value is None:
            doc["spec"].pop(key, None)
        else:
            doc["spec"][key] = value
    return doc


NOW = 1_000_000.0


class World:
    """A scripted cluster for the planner: starts what it asks, as an adapter
    would (recording each trial's design fields), and ends the oldest running
    trial each step, one event per step like a real cluster."""

    limit = 500  # steps before run() says the experiment never finished

    def __init__(self, planner: Any, views: list[Any] | None = None) -> None:
        self.planner = planner
        self.views: dict[str, Any] = {v.name: v for v in views or []}
        self.started: list[Any] = []  # the StartTrial actions, in order
        self.max_active = 0
        self.plan: Any = None

    @property
    def suggested(self) -> list[tuple[int, int, dict[str, Any]]]:
        return [(a.index, a.attempt, a.parameters) for a in self.started]

    def step(self, end: Callable[[Any], Any] | None = None, **kw: Any) -> Any:
        from trialforge.engine.planner import StartTrial, StopTrial

        plan = self.planner.plan(list(self.views.values()), now=kw.pop("now", NOW), **kw)
        for action in plan.actions:
            if isinstance(action, StartTrial):
                name = f"x-{action.index}" + (f"-r{action.attempt}" if action.attempt else "")
                assert name not in self.views, f"{name} started twice"
                self.started.append(action)
                self.views[name] = running_view(name, action)
            elif isinstance(action, StopTrial):
                self.views[action.name] = replace(self.views[action.name], phase=action.phase)
        active = [v for v in self.views.values() if v.phase in ("Pending", "Running")]
        self.max_active = max(self.max_active, len(active))
        if active and end is not None:
            oldest = min(active, key=lambda v: (v.index, v.attempt))
            self.views[oldest.name] = end(oldest)
        self.plan = plan
        return plan

    def run(self, end: Callable[[Any], Any]) -> Any:
        for _ in range(self.limit):
            plan = self.step(end)
            if plan.finished is not None:
                return plan
        raise AssertionError("the experiment never finished")


def score(params: dict[str, Any]) -> float:
    """A smooth objective the samplers can learn: best near lr=0.01, adam, 2 layers."""
    lr = math.log10(params["lr"]) if "lr" in params else 0.0
    return (
        -((lr + 2) ** 2)
        - (0.5 if params.get("opt") == "sgd" else 0)
        - 0.1 * abs(params.get("layers", 2) - 2)
    )


def succeed_scored(view: Any) -> Any:
    """The trial succeeded with :func:`score` of its parameters."""
    return replace(view, phase="Succeeded", values=(score(dict(view.parameters)),))
