"""The run directory: everything a local run records, and what a resume reads back.

A documented, versioned format (docs/run-directory.md; :data:`FORMAT_VERSION`
in state.json's ``formatVersion``), camelCase throughout.  Layout::

    <dir>/experiment.yaml        the spec as it was run
    <dir>/state.json             the experiment's status (engine.status), its name, workdir,
                                 format version and the running process
    <dir>/trials.jsonl           the trial records: a line per change of one
    <dir>/trials/<name>.log      each trial attempt's output
    <dir>/events.jsonl           what happened, in order
    <dir>/checkpoints/<trial>/   TRIALFORGE_CHECKPOINT_DIR of every run of a trial

``trials.jsonl`` is a journal, like Optuna's ``JournalFileStorage`` (not its
format: each line is an engine.record.TrialRecord, ``to_journal``): each line
is a whole record of one trial attempt as it was at that moment, and the last
line that names an attempt is its record.  An attempt's line at its end also
holds the observations parsed from its output.  Lines are only ever appended:
a trial costs the file system one new file (its log), where a file per record
(replaced atomically by a rename) and one per trial's observations cost three.
A new file is the dearest thing a trial asks of the file system; on this
project's 2-CPU test machine (ext4 without a journal) it cost 0.1-1 ms of
system time (bench/RESULTS.md).

state.json is replaced atomically and fsynced.  The journal is not fsynced:
a power cut or an OS crash can lose its last seconds, and a line that one
leaves unreadable counts as never written, so a resume runs that trial again
(as it does one whose line had not been written yet when the run died).

Run directories written before the journal (a ``trials/<name>.json`` record and
a ``trials/<name>.jsonl`` of observations per attempt) are still read; what a
resume of one records goes to the journal.  Format 1 (no ``formatVersion``)
wrote the journal's keys in snake_case; they are still read, and a run that
resumes such a directory first rewrites its journal in camelCase
(:meth:`RunDirectory.upgrade`), so a directory of format 2 is camelCase only.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from trialforge.api.observation import Observation
from trialforge.engine.record import JOURNAL_KEYS, TrialRecord, rfc3339, timestamp

log = logging.getLogger(__name__)


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` atomically, on disk before the rename (so
    that it survives a power cut too)."""
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
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# A journal line's keys that format 1 spelled otherwise (snake_case).
_SNAKE_KEYS = frozenset(attr for attr, key in JOURNAL_KEYS.items() if attr != key)

# The run directory's format (docs/run-directory.md): 1 had no formatVersion
# and a snake_case journal; 2 is camelCase throughout.
FORMAT_VERSION = 2

# state.json's fields beside the experiment's status: the format's version, the
# run's name, the folder its trials ran in, and the process that runs it (its
# pid and host while it runs; what `trialforge list` and `logs -f` look at).
LOCAL_STATE_FIELDS = ("formatVersion", "name", "workdir", "pid", "host")


def state_of(
    status: Mapping[str, Any],
    name: str,
    workdir: Path,
    pid: int | None = None,
    host: str | None = None,
) -> dict[str, Any]:
    """A state.json: the experiment's status (wire names) and the run's own fields."""
    own: dict[str, Any] = {
        "formatVersion": FORMAT_VERSION,
        "name": name,
        "workdir": str(workdir.resolve()),
    }
    if pid is not None:
        own["pid"] = pid
    if host is not None:
        own["host"] = host
    return {**own, **status}


def status_of(state: Mapping[str, Any]) -> dict[str, Any]:
    """The experiment's status in a state.json (what ExperimentStatus validates)."""
    return {k: v for k, v in state.items() if k not in LOCAL_STATE_FIELDS}


def _upgrade_state(state: dict[str, Any]) -> dict[str, Any]:
    """A state.json written before the status was one shape, read as it is now:
    times in seconds become RFC 3339, the best's ``values`` gain its ``value``."""
    for key in ("startTime", "completionTime"):
        if isinstance(state.get(key), int | float):
            state[key] = rfc3339(timestamp(state[key]))
    best = state.get("best")
    if isinstance(best, dict) and "value" not in best and len(best.get("values") or []) == 1:
        best["value"] = best["values"][0]
        state.setdefault("bestValue", best["value"])
    if state.get("phase") == "Interrupted":
        state["phase"] = "Suspended"
    state.setdefault("formatVersion", 1)
    return state


class RunDirectory:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.trials_dir = self.root / "trials"
        self.journal_path = self.root / "trials.jsonl"
        self._events: TextIO | None = None
        # Each attempt's observations as load_trials last read them.
        self._observations: dict[str, list[Observation]] | None = None

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
        """state.json: the experiment's status (api ExperimentStatus, wire names) and
        the run directory's own fields (:data:`LOCAL_STATE_FIELDS`); a directory of
        format 1 reads as format 1 (``formatVersion`` 1) in today's shape."""
        path = self.root / "state.json"
        if not path.exists():
            return {}
        state = _upgrade_state(json.loads(path.read_text()))
        version = state.get("formatVersion")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"{path}: formatVersion {version!r} is newer than this Trialforge reads "
                f"(up to {FORMAT_VERSION}); upgrade Trialforge"
            )
        return state

    def format_version(self) -> int:
        """The format this directory was written in (1 when state.json names none)."""
        return int(self.load_state().get("formatVersion", 1))

    def upgrade(self) -> bool:
        """Rewrite a journal of format 1 (snake_case lines) in camelCase, atomically,
        before a run appends to it; True when it did.  Unreadable lines are kept as
        they are (a resume takes them as never written, as before)."""
        if not self.journal_path.exists():
            return False
        lines = self.journal_path.read_text(encoding="utf-8", errors="replace").splitlines()
        out, changed = [], False
        for line in lines:
            try:
                data = json.loads(line)
                raw = data.pop("observations", None)
                fresh = TrialRecord.from_journal(data).to_journal()
            except (ValueError, TypeError, AttributeError, KeyError):
                out.append(line)
                continue
            if raw is not None:
                fresh["observations"] = raw
            if any(key in _SNAKE_KEYS for key in data):
                changed = True
            out.append(json.dumps(fresh, allow_nan=True))
        if not changed:
            return False
        text = "".join(f"{line}\n" for line in out).encode("utf-8")
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".trials.jsonl.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.journal_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def save_state(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.root / "state.json", state)

    # -- trials ---------------------------------------------------------------------

    def save_trial(
        self, record: TrialRecord, observations: Sequence[Observation] | None = None
    ) -> None:
        """Append ``record`` to the journal now (the runtime's writer does so in the background)."""
        self.append_records([(record, observations)])

    def append_records(
        self, records: Sequence[tuple[TrialRecord, Sequence[Observation] | None]]
    ) -> None:
        """Append records to the journal, in one write, each with its attempt's
        observations when it ended (None while it runs)."""
        lines = []
        for record, observations in records:
            line = record.to_journal()
            if observations is not None:
                line["observations"] = [o.to_dict() for o in observations]
            lines.append(json.dumps(line, allow_nan=True))
        data = ("\n".join(lines) + "\n").encode("utf-8")
        fd = os.open(
            self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def load_trials(self) -> list[TrialRecord]:
        """Every trial attempt's latest record, by index and attempt."""
        records: dict[str, TrialRecord] = {}
        observations: dict[str, list[Observation]] = {}
        for path in sorted(self.trials_dir.glob("*.json")) if self.trials_dir.exists() else []:
            try:  # the layout before the journal: a record per file
                record = TrialRecord.from_journal(json.loads(path.read_text()))
            except (ValueError, TypeError, AttributeError) as exc:
                log.warning("%s is unreadable (%s): taken as never written", path, exc)
                continue
            records[record.name] = record
        if self.journal_path.exists():
            with open(self.journal_path, encoding="utf-8", errors="replace") as journal:
                for number, line in enumerate(journal, 1):
                    try:
                        data = json.loads(line)
                        raw = data.pop("observations", None)
                        record = TrialRecord.from_journal(data)
                        seen = None if raw is None else [Observation.from_dict(o) for o in raw]
                    except (ValueError, TypeError, AttributeError, KeyError) as exc:
                        # Only a crash leaves one so (see the module's doc).
                        log.warning(
                            "%s:%d is unreadable (%s): taken as never written",
                            self.journal_path,
                            number,
                            exc,
                        )
                        continue
                    records[record.name] = record
                    if seen is not None:  # only an attempt's end holds them
                        observations[record.name] = seen
        self._observations = observations
        return sorted(records.values(), key=lambda r: (r.index, r.attempt))

    def checkpoint_dir(self, trial: str) -> Path:
        """The checkpoints of a trial (by its first attempt's name): <dir>/checkpoints/<trial>."""
        return self.root / "checkpoints" / trial

    def log_path(self, name: str) -> Path:
        return self.trials_dir / f"{name}.log"

    def discard_output(self, name: str) -> None:
        """Delete what an attempt that will run again from its start wrote."""
        self.log_path(name).unlink(missing_ok=True)
        (self.trials_dir / f"{name}.jsonl").unlink(missing_ok=True)  # before the journal
        if self._observations is not None:
            self._observations.pop(name, None)

    def load_observations(self, name: str) -> list[Observation]:
        """The observations recorded with a trial attempt's end (none while it runs)."""
        if self._observations is None:
            self.load_trials()
        assert self._observations is not None
        if name in self._observations:
            return list(self._observations[name])
        legacy = self.trials_dir / f"{name}.jsonl"
        if not legacy.exists():
            return []
        out = []
        for line in legacy.read_text().splitlines():
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


_Snapshot = tuple[TrialRecord, Sequence[Observation] | None]


class RecordWriter:
    """Saves trial records on a thread of its own, so a slow disk never holds up a run.

    :meth:`save` takes the record and returns at once; the thread
    appends each record's latest snapshot to the journal, not fsynced (see the
    module's doc; a state that a newer one replaced before its turn is not
    written), all that are due in one write.
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
        # name -> ((record, its observations), monotonic time it is due)
        self._pending: dict[str, tuple[_Snapshot, float]] = {}
        self._writing = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._flushing = 0

    def save(
        self,
        record: TrialRecord,
        delay: float = 0.0,
        observations: Sequence[Observation] | None = None,
    ) -> None:
        """Write ``record`` as it is now, with ``observations`` (an attempt's end)."""
        # A record never changes (engine.record), so it is its own snapshot, and
        # it is encoded by the writer's thread; so is an Observation.
        snapshot = (record, None if observations is None else tuple(observations))
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

    def _due(self) -> list[_Snapshot]:
        """The pending snapshots that are due (in the order saved), waiting for one.

        Empty when there is nothing left to write and the writer is closing.
        """
        while True:
            if not self._pending:
                if self._closing:
                    return []
                self._cond.wait()
                continue
            now = time.monotonic()
            every = self._flushing or self._closing
            due = [name for name, (_, at) in self._pending.items() if every or at <= now]
            if due:
                return [self._pending.pop(name)[0] for name in due]
            self._cond.wait(min(at for _, at in self._pending.values()) - now)

    def _run(self) -> None:
        while True:
            with self._cond:
                snapshots = self._due()
                if not snapshots:
                    self._thread = None
                    return
                self._writing = True
            try:
                self._dir.append_records(snapshots)
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
