"""A run directory written through RunDirectory, with every kind of trial an
experiment ends up with: succeeded, pruned, failed, cancelled, running (its
observations only in its log) and pending."""

from __future__ import annotations

import json
from pathlib import Path

from tests.factories import experiment_doc
from trialforge.api.observation import Observation
from trialforge.engine.record import TrialRecord
from trialforge.local.rundir import RunDirectory, state_of

T0 = 1_780_000_000.0
# name suffix -> (phase, lr, opt, layers, curve, value)
TRIALS = {
    0: ("Succeeded", 1e-3, "adam", 2, [0.5, 0.7, 0.8, 0.85], 0.85),
    1: ("Succeeded", 3e-2, "sgd", 4, [0.4, 0.6, 0.7, 0.75], 0.75),
    2: ("Pruned", 1e-4, "sgd", 1, [0.2, 0.25], None),
    3: ("Succeeded", 1e-2, "adam", 3, [0.6, 0.8, 0.9, 0.93], 0.93),
    4: ("Failed", 1e-1, "adam", 1, [0.3], None),
    5: ("Pruned", 3e-4, "sgd", 2, [0.1, 0.15, 0.2], None),
    6: ("Cancelled", 2e-4, "adam", 4, [], None),
    7: ("Running", 5e-3, "adam", 2, [0.55, 0.72], None),
    8: ("Pending", 5e-2, "sgd", 3, [], None),
}


def make_run(root: Path, name: str = "demo") -> Path:
    doc = experiment_doc()
    doc["metadata"]["name"] = name
    directory = RunDirectory(root)
    directory.create(doc)
    records = []
    for i, (phase, lr, opt, layers, curve, value) in TRIALS.items():
        observations = [
            Observation(step=s + 1, metrics={"acc": v, "loss": 1 - v}, time=T0 + 10 * i + s)
            for s, v in enumerate(curve)
        ]
        started = phase != "Pending"
        record = TrialRecord(
            name=f"{name}-{i}",
            index=i,
            attempt=0,
            phase=phase,
            parameters={"lr": lr, "opt": opt, "layers": layers},
            seed=100 + i,
            reason={"Pruned": "EarlyStopped", "Failed": "Error"}.get(phase),
            values=(value,) if value is not None else None,
            role="search",
            search_index=i,
            code_version="abc123",
            node="laptop" if started else None,
            start_time=T0 + 10 * i if started else None,
            completion_time=T0 + 10 * i + 5 if phase not in ("Running", "Pending") else None,
            exit_code=1 if phase == "Failed" else None,
        )
        if phase == "Running":
            # A running trial's observations are in its log only.
            log = directory.log_path(record.name)
            log.write_text("".join(json.dumps({"step": o.step, **o.metrics}) + "\n"
                                   for o in observations) + "warming up\n")  # fmt: skip
            records.append((record, None))
        else:
            records.append((record, observations if started else None))
    directory.append_records(records)
    status = {"phase": "Running", "trials": {"succeeded": 3, "pruned": 2, "failed": 1},
              "best": {"trial": f"{name}-3", "value": 0.93}}  # fmt: skip
    directory.save_state(state_of(status, name, root))
    return root
