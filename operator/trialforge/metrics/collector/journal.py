"""The journal: numbered observations, kept on the shared volume until acknowledged."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trialforge.api.observation import Observation
from trialforge.metrics.contract import observation_json

log = logging.getLogger("trialforge.collector")


def encode(seq: int, obs: Observation, now: float) -> str:
    """One observation as the ingest reads it (``now`` when the trainer gave no time)."""
    return observation_json(seq, obs.step, obs.time if obs.time is not None else now, obs.metrics)


class Journal:
    """Unacknowledged observations, in memory and in an append-only file.

    ``journal.jsonl`` holds encoded observations, ``state.json`` (replaced
    atomically) the numbering, the acknowledged sequence and the source's
    position.  Observations are appended to the journal *before* the state that
    counts them is written, so after a crash the state is the truth: journal
    lines past ``next_seq`` are dropped and re-read from the source position,
    lines at or below ``acked`` are forgotten.
    """

    def __init__(self, directory: Path, capacity: int) -> None:
        self.dir = directory
        self.capacity = capacity
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / "state.json"
        self.journal_path = self.dir / "journal.jsonl"
        self.lock = threading.Condition()
        self.state: dict[str, Any] = {"next_seq": 1, "acked": 0, "source": {}, "reader": {}}
        self.pending: deque[tuple[int, str]] = deque()
        self.resumed = False
        self._journal_lines = 0
        self._load()
        self._file = open(self.journal_path, "a", encoding="utf-8")  # noqa: SIM115

    @property
    def next_seq(self) -> int:
        return int(self.state["next_seq"])

    @property
    def acked(self) -> int:
        return int(self.state["acked"])

    def _load(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.state.update(json.loads(self.state_path.read_text()))
            self.resumed = True
        kept: list[str] = []
        with contextlib.suppress(FileNotFoundError), open(self.journal_path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # torn by a crash; the source position re-reads it
                try:
                    seq = int(json.loads(line)["seq"])
                except (ValueError, KeyError, TypeError):
                    continue
                if self.acked < seq < self.next_seq:
                    self.pending.append((seq, line.rstrip("\n")))
                    kept.append(line)
        # Rewrite it as exactly what is pending (drops torn and uncounted lines).
        tmp = self.journal_path.with_suffix(".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, self.journal_path)
        self._journal_lines = len(kept)
        expected = self.next_seq - self.acked - 1
        if len(self.pending) != expected:
            log.error(
                "journal holds %d of the %d unacknowledged observations; the rest are lost",
                len(self.pending),
                expected,
            )

    def _save_state(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state), encoding="utf-8")
        os.replace(tmp, self.state_path)

    def room(self) -> int:
        with self.lock:
            return self.capacity - len(self.pending)

    def append(
        self,
        observations: list[Observation],
        source: Mapping[str, Any] | None = None,
        reader: Mapping[str, Any] | None = None,
    ) -> int:
        """Number and keep ``observations``; record the source position they came from."""
        now = time.time()
        with self.lock:
            seq = self.next_seq
            lines = []
            for obs in observations:
                text = encode(seq, obs, now)
                self.pending.append((seq, text))
                lines.append(text + "\n")
                seq += 1
            if lines:
                self._file.write("".join(lines))
                self._file.flush()  # in the page cache: survives the process dying
                self._journal_lines += len(lines)
            self.state["next_seq"] = seq
            if source is not None:
                self.state["source"] = dict(source)
            if reader is not None:
                self.state["reader"] = dict(reader)
            self._save_state()
            if lines:
                self.lock.notify_all()
            return len(lines)

    def batch(self, size: int, after: int = 0) -> list[tuple[int, str]]:
        """Up to ``size`` pending observations numbered after ``after``."""
        with self.lock:
            if not self.pending:
                return []
            start = max(0, after - self.pending[0][0] + 1)
            end = min(len(self.pending), start + size)
            return [self.pending[i] for i in range(start, end)]

    def ack(self, stored: int) -> None:
        """The operator stored everything up to ``stored``: forget it."""
        with self.lock:
            if stored <= self.acked:
                return
            while self.pending and self.pending[0][0] <= stored:
                self.pending.popleft()
            self.state["acked"] = min(stored, self.next_seq - 1)
            self._save_state()
            if self._journal_lines > 4 * self.capacity or (
                not self.pending and self._journal_lines > 1000
            ):
                self._compact()
            self.lock.notify_all()

    def renumber(self, stored: int, quiet: bool = False) -> None:
        """The operator has less than we thought and what it lacks is gone: go on after it.

        ``quiet``: nothing is lost, the trial's sequence simply began before this
        collector (a new pod of a trial that ran before): number after it."""
        with self.lock:
            if not quiet:
                log.error(
                    "the operator has stored up to seq %d but this collector no longer has "
                    "%d..%d; renumbering what is pending",
                    stored,
                    stored + 1,
                    (self.pending[0][0] - 1) if self.pending else self.next_seq - 1,
                )
            items = [json.loads(text) for _, text in self.pending]
            self.pending.clear()
            seq = stored + 1
            for item in items:
                item["seq"] = seq
                self.pending.append((seq, json.dumps(item, separators=(",", ":"))))
                seq += 1
            self.state.update(next_seq=seq, acked=stored)
            self._compact()
            self._save_state()

    def _compact(self) -> None:
        self._file.close()
        tmp = self.journal_path.with_suffix(".tmp")
        tmp.write_text("".join(text + "\n" for _, text in self.pending), encoding="utf-8")
        os.replace(tmp, self.journal_path)
        self._journal_lines = len(self.pending)
        self._file = open(self.journal_path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        with self.lock:
            self._file.close()
