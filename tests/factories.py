"""Small builders for Experiment documents used across the tests."""

from __future__ import annotations

import copy
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


def experiment_doc(**spec_overrides: Any) -> dict[str, Any]:
    """A valid Experiment with some spec fields replaced (None deletes a field)."""
    doc = copy.deepcopy(BASE)
    for key, value in spec_overrides.items():
        if value is None:
            doc["spec"].pop(key, None)
        else:
            doc["spec"][key] = value
    return doc
