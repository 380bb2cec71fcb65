"""The run directory: everything a local run records, and what a resume reads back.

Layout::

    <dir>/experiment.yaml        the spec as it was run
    <dir>/state.json             the experiment's phase, start, finish, best
    <dir>/trials/<name>.json     one record per trial attempt
    <dir>/trials/<name>.log      the trainer's output
    <dir>/trials/<name>.jsonl    the observations parsed from it
    <dir>/events.jsonl           what happened, in order

Records are replaced atomically (write, fsync, rename) so a crash never leaves
half a file for the resume to trip over.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trialforge.api.observation import Observation


@dataclass
class TrialRecord:
    name: str
    index: int
    attempt: int
    parameters: dict[str, Any]
    seed: int
    phase: str = "Pending"
    reason: str | None = None
    message: str | None = None
    values: list[float] | None = None
    retryable: bool = True
    exit_code: int | None = None
    start_time: float | None = None
    completion_time: float | None = None
    search_state: dict[str, Any] = field(default_factory=dict)
    junk_lines: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialRecord:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True, allow_nan=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunDirectory:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.trials_dir = self.root / "trials"

    def exists(self) -> bool:
        return (self.root / "state.json").exists()

    def create(self, experiment_doc: dict[str, Any]) -> None:
        self.trials_dir.mkdir(parents=True, exist_ok=True)
        with open(self.root / "experiment.yaml", "w", encoding="utf-8") as handle:
            yaml.safe_dump(experiment_doc, handle, sort_keys=False)

    def recorded_spec(self) -> dict[str, Any] | None:
        path = self.root / "experiment.yaml"
        if not path.exists():
            return None
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)

    # -- experiment state ----------------------------------------------------------

    def load_state(self) -> dict[str, Any]:
        path = self.root / "state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def save_state(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.root / "state.json", state)

    # -- trials ---------------------------------------------------------------------

    def save_trial(self, record: TrialRecord) -> None:
        write_json_atomic(self.trials_dir / f"{record.name}.json", asdict(record))

    def load_trials(self) -> list[TrialRecord]:
        if not self.trials_dir.exists():
            return []
        records = [
            TrialRecord.from_dict(json.loads(p.read_text()))
            for p in sorted(self.trials_dir.glob("*.json"))
        ]
        return sorted(records, key=lambda r: (r.index, r.attempt))

    def log_path(self, name: str) -> Path:
        return self.trials_dir / f"{name}.log"

    def observations_path(self, name: str) -> Path:
        return self.trials_dir / f"{name}.jsonl"

    def load_observations(self, name: str) -> list[Observation]:
        path = self.observations_path(name)
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(Observation.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash
        return out

    # -- events ---------------------------------------------------------------------

    def event(self, kind: str, message: str, **fields: Any) -> None:
        entry = {"time": time.time(), "event": kind, "message": message, **fields}
        with open(self.root / "events.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")

    def events(self) -> Iterator[dict[str, Any]]:
        path = self.root / "events.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                yield json.loads(line)
