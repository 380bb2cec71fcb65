"""The run directory: everything a local run records, and what a resume reads back.

Layout::

    <dir>/experiment.yaml        the spec as it was run
    <dir>/state.json             the experiment's phase, start, finish, best
    <dir>/trials/<name>.json     one record per trial attempt
    <dir>/trials/<name>.log      the trainer's output
    <dir>/trials/<name>.jsonl    the observations parsed from it
    <dir>/events.jsonl           what happened, in order

Trial records and state.json are replaced atomically (write, then rename): a
run that dies leaves each as it was or as it became, never half of one.
state.json is also fsynced; trial records are not, one by one: a power cut or an
OS crash can lose the last seconds of them, and a record left unreadable by one
counts as never written, so a resume runs that trial again (as it does one whose
record had not been written yet when the run died).  An fsync per record cost
0.3-0.8 ms of a 10 ms trial's turnaround on this project's 2-CPU test machine
(bench/RESULTS.md).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from trialforge.api.observation import Observation

log = logging.getLogger(__name__)


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
    # What the run is for and what reproduces it (lineage).
    role: str | None = None
    config: str | None = None
    repeat: int = 0
    search_index: int | None = None
    code_version: str | None = None
    data_version: str | None = None
    command: list[str] | None = None
    node: str | None = None
    gpu_type: str | None = None
    artifact_uri: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialRecord:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def write_json_atomic(path: Path, data: Any, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically; ``durable``: on disk before the
    rename, so that it survives a power cut too."""
    # Encoded whole, then written at once: json.dump to a text file writes each
    # of hundreds of small pieces through the text layer (an indented dump is
    # encoded in Python either way).
    text = json.dumps(data, indent=1, sort_keys=True, allow_nan=True).encode("utf-8")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text)
            if durable:
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
        self._events: TextIO | None = None

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
        write_json_atomic(self.record_path(record.name), asdict(record))

    def record_path(self, name: str) -> Path:
        return self.trials_dir / f"{name}.json"

    def load_trials(self) -> list[TrialRecord]:
        if not self.trials_dir.exists():
            return []
        records = []
        for path in sorted(self.trials_dir.glob("*.json")):
            try:
                records.append(TrialRecord.from_dict(json.loads(path.read_text())))
            except (ValueError, TypeError, AttributeError) as exc:
                # Only a power cut or an OS crash leaves one so (see the module's doc).
                log.warning("%s is unreadable (%s): taken as never written", path, exc)
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

    def writer(self) -> RecordWriter:
        """A writer that saves trial records here in the background."""
        return RecordWriter(self)

    # -- events ---------------------------------------------------------------------

    def event(self, kind: str, message: str, **fields: Any) -> None:
        entry = {"time": time.time(), "event": kind, "message": message, **fields}
        if self._events is None or self._events.closed:
            # Kept open (line-buffered: each event is written at once): an open
            # per event was a measurable part of each trial's turnaround.
            self._events = open(self.root / "events.jsonl", "a", encoding="utf-8", buffering=1)  # noqa: SIM115
            weakref.finalize(self, self._events.close)
        self._events.write(json.dumps(entry) + "\n")

    def events(self) -> Iterator[dict[str, Any]]:
        path = self.root / "events.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                yield json.loads(line)


class RecordWriter:
    """Saves trial records on a thread of its own, so a slow disk never holds up a run.

    :meth:`save` takes a snapshot of the record and returns at once; the thread
    writes each record's latest snapshot, atomically but not fsynced (see the
    module's doc; a state that a newer one replaced before its turn is not written).
    A save may ask for a delay: its snapshot is written no sooner than that,
    unless a newer one or a flush comes first (a trial's start, so that a trial
    shorter than the delay is written once, at its end).
    :meth:`flush` waits until every snapshot taken so far is written and raises
    what a write raised (so does the next :meth:`save` after a failed write);
    :meth:`close` flushes and lets the thread end.
    """

    def __init__(self, directory: RunDirectory) -> None:
        self._dir = directory
        self._cond = threading.Condition()
        # name -> (snapshot, monotonic time it is due)
        self._pending: dict[str, tuple[dict[str, Any], float]] = {}
        self._writing = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._flushing = 0

    def save(self, record: TrialRecord, delay: float = 0.0) -> None:
        snapshot = asdict(record)
        due = time.monotonic() + delay if delay > 0 else 0.0
        with self._cond:
            self._raise()
            earlier = self._pending.get(record.name)
            if earlier is not None:
                due = min(due, earlier[1])  # a newer state never waits longer
            self._pending[record.name] = (snapshot, due)
            if self._thread is None:
                self._closing = False
                self._thread = threading.Thread(
                    target=self._run, name="trialforge-records", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def flush(self) -> None:
        with self._cond:
            self._flushing += 1  # every snapshot is due now
            self._cond.notify_all()
            try:
                while (self._pending or self._writing) and self._error is None:
                    self._cond.wait()
            finally:
                self._flushing -= 1
            self._raise()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self.flush()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _next(self) -> str | None:
        """The first pending record that is due (in the order saved), waiting for one.

        None when there is nothing left to write and the writer is closing.
        """
        while True:
            if not self._pending:
                if self._closing:
                    return None
                self._cond.wait()
                continue
            now = time.monotonic()
            soonest = None
            for name, (_, due) in self._pending.items():
                if due <= now or self._flushing or self._closing:
                    return name
                soonest = due if soonest is None else min(soonest, due)
            self._cond.wait(soonest - now)  # type: ignore[operator]

    def _run(self) -> None:
        while True:
            with self._cond:
                name = self._next()
                if name is None:
                    self._thread = None
                    return
                snapshot, _ = self._pending.pop(name)
                self._writing = True
            try:
                write_json_atomic(self._dir.record_path(name), snapshot, durable=False)
            except BaseException as exc:
                with self._cond:
                    self._error = exc
                    self._writing = False
                    self._thread = None
                    self._cond.notify_all()
                return
            with self._cond:
                self._writing = False
                self._cond.notify_all()
