"""``trialforge collector``: the metrics sidecar of a trial pod.

It reads what the trainer reports, numbers each observation (``seq`` 1, 2, 3 …
per trial), keeps what the operator has not yet acknowledged in a bounded
journal on the pod's shared volume, and POSTs batches to the operator's ingest
endpoint.  Each answer carries two sequence numbers: ``received`` (the operator
holds everything up to it; the next batch starts after it, and one below what
was sent, from a restarted operator, means "send again from there") and
``stored`` (written to the Trial in the cluster: what the journal may forget).
A request with nothing new asks the operator to ``wait`` until what it received
is stored, so the collector learns it without polling.  A collector restarted in
the same pod reads its journal back: it re-sends what was not acknowledged and
goes on numbering where it stopped, so no observation is lost, repeated or
skipped.  Standard library only (plus our parsers): it must stay small.

Sources (``TRIALFORGE_METRICS_SOURCE``):

``stdout``
    The operator wraps the trainer's command in ``/bin/sh`` so that its output
    (stdout and stderr, merged) goes through ``tee`` into
    ``$TRIALFORGE_SHARED_DIR/stdout.log``; ``kubectl logs`` still shows it.  The
    collector tails that file.
``file``
    Tails ``TRIALFORGE_METRICS_PATH`` (relative paths are under the shared
    directory), surviving rotation (rename or copy-truncate) and partial lines.
``push``
    Listens on ``127.0.0.1:$TRIALFORGE_PUSH_PORT``; ``trialforge.report()`` posts
    one JSON observation per call to ``$TRIALFORGE_REPORT_URL``.
``tensorboard``
    Scalars from the event files under ``TRIALFORGE_METRICS_PATH`` (a log
    directory); needs the ``tensorboard`` extra.

The trainer's end: the wrapper writes the trainer's exit code to
``$TRIALFORGE_SHARED_DIR/exit-code`` after its output is complete.  The
collector then reads the source to its end, sends everything, and exits 0 (1 if
something could not be delivered within ``TRIALFORGE_FLUSH_TIMEOUT``).  SIGTERM
(the kubelet stops native sidecars once the trainer has exited) does the same.

Environment (flags of ``trialforge collector`` override them):

===============================  =================================================
``TRIALFORGE_INGEST_URL``        the operator's ``/v1/observations`` URL (required)
``TRIALFORGE_TOKEN``             the trial's token, from its Secret (required)
``TRIALFORGE_NAMESPACE``         the trial's namespace (required)
``TRIALFORGE_TRIAL``             the trial's name (required)
``TRIALFORGE_METRICS_SOURCE``    stdout | file | push | tensorboard (stdout)
``TRIALFORGE_METRICS_FORMAT``    json | keyvalue | regex (json)
``TRIALFORGE_METRICS_PATTERN``   the regex for format ``regex``
``TRIALFORGE_METRICS_PATH``      the file (``file``) or log directory (``tensorboard``)
``TRIALFORGE_SHARED_DIR``        the volume shared with the trainer (/trialforge)
``TRIALFORGE_PUSH_PORT``         the push server's port (9477)
``TRIALFORGE_RANK``              this pod's rank; only rank 0 reports (0)
``TRIALFORGE_BATCH_SIZE``        observations per request, at most (2000)
``TRIALFORGE_BUFFER_SIZE``       unacknowledged observations kept, at most (50000)
``TRIALFORGE_FLUSH_TIMEOUT``     seconds to deliver the rest after the end (25)
``TRIALFORGE_SEND_INTERVAL``     seconds between two requests while the trainer
                                 runs, on average (0.5; each pause is drawn from
                                 0.5-1.5 times it); the end sends at once
===============================  =================================================
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import os
import random
import re
import signal
import struct
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from trialforge.api.observation import Observation
from trialforge.metrics.parsers import JsonLinesParser, ObservationReader, make_parser

log = logging.getLogger("trialforge.collector")

SOURCES = ("stdout", "file", "push", "tensorboard")
DEFAULT_SHARED_DIR = "/trialforge"
DEFAULT_PUSH_PORT = 9477
STDOUT_FILE = "stdout.log"
EXIT_FILE = "exit-code"
STATE_DIR = "collector"
MAX_LINE = 1 << 20
PROGRESS, IDLE, FAILED = "progress", "idle", "failed"  # what one send round came to
# A pause between requests is the send interval times 1 - SEND_JITTER to
# 1 + SEND_JITTER, drawn afresh each time.  With a fixed pause, collectors answered
# at the same moment (all of them, after any pause of the operator's) send at the
# same moment again, every interval, and such a herd only grows: each answer then
# waits behind a hundred others (Floyd & Jacobson, "The synchronization of periodic
# routing messages", who draw from 0.5 to 1.5 times the period too).
SEND_JITTER = 0.5
READ_CHUNK = 1 << 18


# -- configuration ----------------------------------------------------------------------


@dataclass
class Config:
    ingest_url: str
    token: str
    namespace: str
    trial: str
    source: str = "stdout"
    format: str = "json"
    pattern: str | None = None
    path: str | None = None
    shared_dir: Path = Path(DEFAULT_SHARED_DIR)
    push_port: int = DEFAULT_PUSH_PORT
    rank: int = 0
    batch_size: int = 2000
    buffer_size: int = 50_000
    flush_timeout: float = 25.0
    poll_interval: float = 0.1
    # Fewer, larger requests: the operator's cost is mostly per request, and it
    # stores a trial's observations every few seconds under load anyway.
    send_interval: float = 0.5
    backoff_base: float = 0.2
    backoff_cap: float = 10.0
    request_timeout: float = 10.0
    wait_seconds: float = 2.0  # how long the operator may hold a request with nothing new

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Config:
        def pick(name: str, key: str, default: Any = None) -> Any:
            value = overrides.get(key)
            return value if value is not None else env.get(name, default)

        values: dict[str, Any] = {
            "ingest_url": pick("TRIALFORGE_INGEST_URL", "ingest_url"),
            "token": pick("TRIALFORGE_TOKEN", "token"),
            "namespace": pick("TRIALFORGE_NAMESPACE", "namespace"),
            "trial": pick("TRIALFORGE_TRIAL", "trial"),
        }
        missing = [k for k, v in values.items() if not v]
        if missing:
            raise ValueError(f"the collector needs {', '.join(missing)} (see its --help)")
        cfg = cls(
            **values,
            source=pick("TRIALFORGE_METRICS_SOURCE", "source", "stdout"),
            format=pick("TRIALFORGE_METRICS_FORMAT", "format", "json"),
            pattern=pick("TRIALFORGE_METRICS_PATTERN", "pattern") or None,
            path=pick("TRIALFORGE_METRICS_PATH", "path") or None,
            shared_dir=Path(pick("TRIALFORGE_SHARED_DIR", "shared_dir", DEFAULT_SHARED_DIR)),
            push_port=int(pick("TRIALFORGE_PUSH_PORT", "push_port", DEFAULT_PUSH_PORT)),
            rank=int(pick("TRIALFORGE_RANK", "rank", 0) or 0),
            batch_size=int(pick("TRIALFORGE_BATCH_SIZE", "batch_size", 2000)),
            buffer_size=int(pick("TRIALFORGE_BUFFER_SIZE", "buffer_size", 50_000)),
            flush_timeout=float(pick("TRIALFORGE_FLUSH_TIMEOUT", "flush_timeout", 25.0)),
            send_interval=float(pick("TRIALFORGE_SEND_INTERVAL", "send_interval", 0.5)),
        )
        if cfg.source not in SOURCES:
            raise ValueError(f"unknown metrics source {cfg.source!r}; known: {', '.join(SOURCES)}")
        if cfg.source in ("file", "tensorboard") and not cfg.path:
            raise ValueError(f"metrics source {cfg.source!r} needs TRIALFORGE_METRICS_PATH")
        if cfg.batch_size < 1 or cfg.buffer_size < cfg.batch_size:
            raise ValueError("need 1 <= batch size <= buffer size")
        make_parser(cfg.format, cfg.pattern)  # fail now on a bad format or pattern
        return cfg

    @property
    def source_path(self) -> Path:
        if self.source == "stdout":
            return self.shared_dir / STDOUT_FILE
        path = Path(self.path or "")
        return path if path.is_absolute() else self.shared_dir / path


# -- the journal: numbered observations, kept until acknowledged ------------------------


def encode(seq: int, obs: Observation, now: float) -> str:
    """One observation as the ingest reads it; JSON has no NaN, so those are strings."""
    metrics = {k: v if math.isfinite(v) else str(v) for k, v in obs.metrics.items()}
    when = obs.time if obs.time is not None else now
    return json.dumps(
        {"seq": seq, "step": obs.step, "time": when, "metrics": metrics}, separators=(",", ":")
    )


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

    def renumber(self, stored: int) -> None:
        """The operator has less than we thought and what it lacks is gone: go on after it."""
        with self.lock:
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


# -- line sources -----------------------------------------------------------------------

_NEWLINE_RE = re.compile(r"\r\n|\r|\n")


def _complete_end(buf: bytes) -> int:
    """Where the complete lines of ``buf`` end (a trailing bare CR may be half a CRLF)."""
    i = max(buf.rfind(b"\n"), buf.rfind(b"\r"))
    if i >= 0 and i == len(buf) - 1 and buf[i] == 0x0D:
        i = max(buf.rfind(b"\n", 0, i), buf.rfind(b"\r", 0, i))
    return i + 1


class LineTail:
    """Follows one growing text file by byte offset: rotation, truncation, partial lines.

    ``position()`` is where the lines already handed out end, so a collector
    restarted from it reads the unfinished last line again rather than losing
    it.  A rename-rotated file is read to its end before the new one is opened
    (also after a restart: the old inode is looked for next to the path).
    """

    def __init__(self, path: Path, reader: ObservationReader, saved: Mapping[str, Any]) -> None:
        self.path = path
        self.reader = reader
        self.inode: int | None = saved.get("inode")
        self.offset: int = int(saved.get("offset") or 0)
        self._file: Any = None
        self._buf = b""
        self._discarding = bool(saved.get("discarding"))
        self.rotations = int(saved.get("rotations") or 0)
        self.truncations = int(saved.get("truncations") or 0)

    def position(self) -> dict[str, Any]:
        return {
            "inode": self.inode,
            "offset": self.offset,
            "discarding": self._discarding,
            "rotations": self.rotations,
            "truncations": self.truncations,
        }

    def _open(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        if self.inode is not None and st.st_ino != self.inode:
            old = self._find_inode(self.inode)
            if old is not None:  # resumed after a rotation: finish the old file first
                self._file = open(old, "rb")  # noqa: SIM115
                self._file.seek(self.offset)
                return True
            self.inode, self.offset = None, 0
        self._file = open(self.path, "rb")  # noqa: SIM115
        self.inode = os.fstat(self._file.fileno()).st_ino
        self._file.seek(self.offset)
        return True

    def _find_inode(self, inode: int) -> Path | None:
        with contextlib.suppress(OSError), os.scandir(self.path.parent) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) and entry.inode() == inode:
                    return Path(entry.path)
        return None

    def poll(self, limit: int = 1 << 30, final: bool = False) -> list[Observation]:
        """What the file holds now, up to about ``limit`` observations."""
        if self._file is None and not self._open():
            return []
        found: list[Observation] = []
        at_end = False
        while len(found) < limit:
            chunk = self._file.read(READ_CHUNK)
            if chunk:
                self._buf += chunk
                found += self._lines()
                continue
            # At the end of this file: rotated, truncated, or just nothing new?
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                st = None
            own = os.fstat(self._file.fileno())
            if st is not None and st.st_ino != own.st_ino:
                found += self._end_of_file()  # rotated: the old one is complete
                self._file.close()
                self._file, self.inode, self.offset = None, None, 0
                self.rotations += 1
                if not self._open():
                    at_end = True
                    break
                continue
            if own.st_size < self.offset + len(self._buf):
                log.warning("%s was truncated; reading it from the start", self.path)
                self.truncations += 1
                self._buf, self._discarding, self.offset = b"", False, 0
                self._file.seek(0)
                continue
            at_end = True
            break
        if final and at_end:
            found += self._end_of_file()
        return found

    def _end_of_file(self) -> list[Observation]:
        """The file will not grow: its unterminated last line is a line."""
        rest, self._buf = self._buf, b""
        self.offset += len(rest)
        discarding, self._discarding = self._discarding, False
        if not rest or discarding:
            return []
        obs = self.reader.feed_line(rest.decode("utf-8", "replace"))
        return [] if obs is None else [obs]

    def _lines(self) -> list[Observation]:
        end = _complete_end(self._buf)
        found: list[Observation] = []
        if end:
            text = self._buf[:end].decode("utf-8", "replace")
            self._buf = self._buf[end:]
            self.offset += end
            lines = _NEWLINE_RE.split(text)[:-1]  # text ends with a newline
            if self._discarding:  # the tail of an over-long line, already counted
                self._discarding = False
                lines = lines[1:]
            for line in lines:
                obs = self.reader.feed_line(line)
                if obs is not None:
                    found.append(obs)
        if len(self._buf) > MAX_LINE:
            if not self._discarding:
                self.reader.lines += 1
                self.reader.junk += 1
                self.reader.last_junk = self._buf[:200].decode("utf-8", "replace")
            self.offset += len(self._buf)
            self._buf, self._discarding = b"", True
        return found

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# -- TensorBoard event files ------------------------------------------------------------


class TensorBoardSource:
    """Scalars from the event files under a log directory (the ``tensorboard`` extra).

    Event files are TFRecord files (a little-endian u64 length, its CRC, the record,
    its CRC) that only grow, and each new run adds one; the position is the byte
    offset read in each file, and a record not yet complete is read again next time.
    Only TensorBoard's protobuf ``Event`` is imported, not its loader (which brings
    numpy): the collector stays small.
    """

    def __init__(self, logdir: Path, saved: Mapping[str, Any]) -> None:
        try:
            from tensorboard.compat.proto import event_pb2
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise RuntimeError(
                "metrics source 'tensorboard' needs the tensorboard extra: "
                "pip install 'trialforge[tensorboard]'"
            ) from exc
        self._event = event_pb2.Event
        self.logdir = logdir
        self.offsets: dict[str, int] = {k: int(v) for k, v in (saved.get("offsets") or {}).items()}
        self.bad_records = 0

    def position(self) -> dict[str, Any]:
        return {"offsets": dict(self.offsets)}

    def _files(self) -> list[Path]:
        if not self.logdir.exists():
            return []
        return sorted(p for p in self.logdir.rglob("*") if "tfevents" in p.name and p.is_file())

    def poll(self, limit: int = 1 << 30, final: bool = False) -> list[Observation]:
        found: list[Observation] = []
        for path in self._files():
            key = str(path.relative_to(self.logdir))
            offset = self.offsets.get(key, 0)
            with open(path, "rb") as f:
                f.seek(offset)
                while len(found) < limit:
                    head = f.read(12)
                    if len(head) < 12:
                        break
                    (length,) = struct.unpack("<Q", head[:8])
                    body = f.read(length + 4)
                    if len(body) < length + 4:
                        break  # still being written
                    offset += 16 + length
                    try:
                        event = self._event.FromString(body[:length])
                    except Exception:  # a corrupt record: counted, skipped
                        self.bad_records += 1
                        continue
                    obs = _scalar_observation(event)
                    if obs is not None:
                        found.append(obs)
            self.offsets[key] = offset
            if len(found) >= limit:
                break
        return found

    def close(self) -> None:
        pass


_TENSOR_FORMATS = {1: "<f", 2: "<d", 3: "<i", 9: "<q", 19: "<e"}  # DT_FLOAT, DOUBLE, ...


def _scalar_observation(event: Any) -> Observation | None:
    if not event.HasField("summary"):
        return None
    metrics: dict[str, float] = {}
    for value in event.summary.value:
        kind = value.WhichOneof("value")
        if kind == "simple_value":
            metrics[value.tag] = float(value.simple_value)
        elif kind == "tensor":
            tensor = value.tensor
            if tensor.tensor_shape.dim:  # scalars only
                continue
            number = _tensor_scalar(tensor)
            if number is not None:
                metrics[value.tag] = number
    if not metrics:
        return None
    return Observation(step=max(0, int(event.step)), metrics=metrics, time=float(event.wall_time))


def _tensor_scalar(tensor: Any) -> float | None:
    for field_name in ("float_val", "double_val", "int_val", "int64_val"):
        values = getattr(tensor, field_name)
        if len(values):
            return float(values[0])
    fmt = _TENSOR_FORMATS.get(int(tensor.dtype))
    if fmt and len(tensor.tensor_content) == struct.calcsize(fmt):
        return float(struct.unpack(fmt, tensor.tensor_content)[0])
    return None


# -- the push server --------------------------------------------------------------------


class PushServer:
    """``trialforge.report()`` posts here: one JSON observation per request.

    An observation is in the journal before the answer goes back; with the
    journal full the answer is 503 and ``report()`` tries again.
    """

    def __init__(
        self, port: int, journal: Journal, reader: ObservationReader, host: str = "127.0.0.1"
    ) -> None:
        self.journal = journal
        self.reader = reader
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer(200, {"ok": True})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", "replace")
                code, answer = outer.accept(body)
                self._answer(code, answer)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def accept(self, body: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if self.journal.room() <= 0:
                return 503, {"error": "the collector's buffer is full; try again"}
            obs = self.reader.feed_line(" ".join(body.split("\n")))
            if obs is None:
                return 400, {"error": "no metrics in this report", "junk": self.reader.junk}
            self.journal.append([obs], reader=reader_state(self.reader))
        return 200, {"ok": True}

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def reader_state(reader: ObservationReader) -> dict[str, Any]:
    return {
        "last_step": reader.last_step,
        "lines": reader.lines,
        "observations": reader.observations,
        "junk": reader.junk,
        "blank": reader.blank,
    }


def restore_reader(reader: ObservationReader, saved: Mapping[str, Any]) -> None:
    reader.last_step = saved.get("last_step")
    for name in ("lines", "observations", "junk", "blank"):
        setattr(reader, name, int(saved.get(name) or 0))


# -- delivery ---------------------------------------------------------------------------


def send_pause(interval: float, rng: random.Random) -> float:
    """Seconds from one request's answer to the next request, while the trainer runs."""
    return interval * (1.0 + SEND_JITTER * (2.0 * rng.random() - 1.0))


def backoff_delays(base: float, cap: float, rng: random.Random | None = None) -> Iterator[float]:
    """Exponential backoff with 'equal jitter': half fixed, half random, capped."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        ceiling = min(cap, base * (2**attempt))
        yield ceiling / 2 + rng.uniform(0, ceiling / 2)
        attempt = min(attempt + 1, 30)


@dataclass
class SendResult:
    status: int  # 0: no answer (the connection failed)
    body: dict[str, Any] = field(default_factory=dict)


class IngestClient:
    """POSTs batches to the ingest endpoint over one kept-alive connection."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        url = urllib.parse.urlsplit(cfg.ingest_url)
        if url.scheme not in ("http", "https"):
            raise ValueError(f"the ingest URL must be http(s): {cfg.ingest_url!r}")
        self.https = url.scheme == "https"
        self.host = url.hostname or "localhost"
        self.port = url.port or (443 if self.https else 80)
        self.target = url.path or "/"
        if url.query:
            self.target += "?" + url.query
        head = json.dumps({"namespace": cfg.namespace, "trial": cfg.trial, "token": cfg.token})
        self.prefix = (head[:-1] + ',"observations":[').encode()
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self._conn = cls(self.host, self.port, timeout=self.cfg.request_timeout)
        return self._conn

    def send(self, items: list[tuple[int, str]], wait: float = 0.0) -> SendResult:
        tail = b"]}" if not wait else b'],"wait":' + repr(float(wait)).encode() + b"}"
        body = self.prefix + ",".join(text for _, text in items).encode() + tail
        for attempt in range(2):  # a kept-alive connection the server closed: once more
            conn = self._connection()
            try:
                conn.request(
                    "POST", self.target, body=body, headers={"Content-Type": "application/json"}
                )
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 0 and isinstance(
                    exc, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError
                ):
                    continue
                log.debug("ingest unreachable: %s", exc)
                return SendResult(0, {"error": str(exc)})
            try:
                parsed = json.loads(data or b"{}")
            except ValueError:
                parsed = {"error": data[:200].decode("utf-8", "replace")}
            return SendResult(response.status, parsed if isinstance(parsed, dict) else {})
        return SendResult(0, {"error": "no answer"})

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# -- the collector ----------------------------------------------------------------------


class Collector:
    """One trial's collector: a source thread feeding the journal, a sender draining it."""

    def __init__(self, cfg: Config, sleep: Callable[[float], None] | None = None) -> None:
        self.cfg = cfg
        self.state_dir = cfg.shared_dir / STATE_DIR
        self.journal = Journal(self.state_dir, cfg.buffer_size)
        self.client = IngestClient(cfg)
        saved = self.journal.state
        parser = JsonLinesParser() if cfg.source == "push" else make_parser(cfg.format, cfg.pattern)
        self.reader = ObservationReader(parser, max_line=MAX_LINE)
        restore_reader(self.reader, saved.get("reader") or {})
        self.source: Any = None
        self.push: PushServer | None = None
        if cfg.source in ("stdout", "file"):
            self.source = LineTail(cfg.source_path, self.reader, saved.get("source") or {})
        elif cfg.source == "tensorboard":
            self.source = TensorBoardSource(cfg.source_path, saved.get("source") or {})
        self.stopping = threading.Event()  # the trainer has exited, or SIGTERM
        self.drained = threading.Event()  # the source has been read to its end
        self.trial_ended = False
        self.sent_requests = 0
        self.failures = 0
        self.sent = 0  # the last seq the operator said it holds (its "received")
        self.last_request = 0.0
        self.next_request = 0.0  # not before, while the trainer runs (see SEND_JITTER)
        self.rng = random.Random()
        self.full_batch = False
        self._sleep = sleep or self.stopping.wait
        if self.journal.resumed:
            log.info(
                "resumed: %d observations numbered, %d acknowledged, %d to re-send",
                self.journal.next_seq - 1,
                self.journal.acked,
                len(self.journal.pending),
            )

    @property
    def exit_marker(self) -> Path:
        return self.cfg.shared_dir / EXIT_FILE

    def trainer_exited(self) -> bool:
        return self.exit_marker.exists()

    # The source side ------------------------------------------------------------------

    def _read_source(self) -> None:
        try:
            if self.cfg.source == "push":
                assert self.push is not None
                while not (self.stopping.is_set() or self.trainer_exited()):
                    self.stopping.wait(self.cfg.poll_interval)
                return
            while True:
                final = self.stopping.is_set() or self.trainer_exited()
                self._read_once(final)
                if final:
                    return
                self.stopping.wait(self.cfg.poll_interval)
        except Exception:
            log.exception("reading the metrics source failed")
            raise
        finally:
            self.drained.set()
            with self.journal.lock:
                self.journal.lock.notify_all()

    def _read_once(self, final: bool) -> None:
        while True:
            room = self.journal.room()
            if room <= 0:
                if final:  # cannot wait for room forever at the end: the sender drains it
                    with self.journal.lock:
                        self.journal.lock.wait(self.cfg.poll_interval)
                    continue
                return  # backpressure: leave the rest in the file for now
            found = self.source.poll(limit=room, final=final)
            if found or final:
                self.journal.append(found, self.source.position(), reader_state(self.reader))
            elif self.source.position() != self.journal.state.get("source"):
                self.journal.append([], self.source.position(), reader_state(self.reader))
            if len(found) < room:
                return

    # The sending side -----------------------------------------------------------------

    def _idle(self, seconds: float) -> str:
        """Wait up to ``seconds``; new observations or the source's end wake it early."""
        with self.journal.lock:
            self.journal.lock.wait(seconds)
        return IDLE

    def _send_round(self) -> str:
        """One request, or a short wait for something to send: PROGRESS (go on at
        once), IDLE (nothing to do yet) or FAILED (back off before trying again)."""
        journal = self.journal
        urgent = self.drained.is_set() or journal.room() < self.cfg.buffer_size // 2
        linger = self.next_request - time.monotonic()
        if linger > 0 and not urgent and not self.full_batch:
            return self._idle(min(linger, self.cfg.poll_interval))
        items = journal.batch(self.cfg.batch_size, after=max(self.sent, journal.acked))
        wait = 0.0
        if not items:
            if not journal.pending:
                with journal.lock:
                    if not journal.pending and not self.drained.is_set():
                        journal.lock.wait(self.cfg.poll_interval)
                return IDLE
            # All of it is with the operator, not all of it stored yet: ask it to
            # answer once it is, when holding it matters (the end, a full journal)
            # or after a quiet second (a restarted operator may have lost it).
            if not urgent and time.monotonic() - self.last_request < 1.0:
                return self._idle(self.cfg.poll_interval)
            wait = self.cfg.wait_seconds
        acked_before = journal.acked
        result = self.client.send(items, wait)
        self.last_request = time.monotonic()
        self.next_request = self.last_request + send_pause(self.cfg.send_interval, self.rng)
        self.full_batch = len(items) == self.cfg.batch_size  # more may wait: no linger
        self.sent_requests += 1
        stored = result.body.get("stored")
        received = result.body.get("received", stored)
        if result.status == 200 and isinstance(stored, int) and isinstance(received, int):
            journal.ack(stored)
            if received < self.sent:
                log.info(
                    "the operator holds up to seq %d, not %d (it restarted): sending again",
                    received,
                    self.sent,
                )
            self.sent = received
            return PROGRESS if items or journal.acked > acked_before else FAILED
        self.failures += 1
        if result.status == 409 and result.body.get("error", "").endswith("has ended"):
            log.warning(
                "the trial has ended; %d observations were not stored", len(journal.pending)
            )
            self.trial_ended = True
            return FAILED
        if result.status == 409 and isinstance(stored, int) and isinstance(received, int):
            if stored < journal.acked:
                journal.renumber(stored)
                self.sent = stored
                return PROGRESS
            journal.ack(stored)
            self.sent = received  # the gap: send again after what it holds
            return PROGRESS
        log.warning(
            "ingest answered %s: %s; retrying",
            result.status or "nothing",
            result.body.get("error", result.body),
        )
        return FAILED

    def run(self) -> int:
        cfg = self.cfg
        if cfg.rank != 0:
            log.info("rank %d: only rank 0 reports; waiting for the trainer to end", cfg.rank)
            while not (self.stopping.is_set() or self.trainer_exited()):
                self.stopping.wait(1.0)
            return 0
        if cfg.source == "push":
            self.push = PushServer(cfg.push_port, self.journal, self.reader)
            self.push.start()
            log.info("push server on 127.0.0.1:%d", self.push.port)
        reader = threading.Thread(target=self._read_source, name="source", daemon=True)
        reader.start()
        delays = backoff_delays(cfg.backoff_base, cfg.backoff_cap)
        deadline: float | None = None
        try:
            while not self.trial_ended:
                if self.drained.is_set() and deadline is None:
                    deadline = time.monotonic() + cfg.flush_timeout
                if self.drained.is_set() and not self.journal.pending:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    break
                outcome = self._send_round()
                if outcome == PROGRESS:
                    delays = backoff_delays(cfg.backoff_base, cfg.backoff_cap)
                elif outcome == FAILED and not self.trial_ended:
                    delay = next(delays)
                    if deadline is not None:
                        delay = min(delay, max(0.0, deadline - time.monotonic()))
                    time.sleep(delay) if self.stopping.is_set() else self._sleep(delay)
        finally:
            if self.push is not None:
                self.push.close()
            if self.source is not None:
                self.source.close()
            self.client.close()
        left = len(self.journal.pending)
        self.journal.close()
        r = self.reader
        log.info(
            "done: %d lines, %d observations, %d junk%s; %d acknowledged, %d not delivered",
            r.lines,
            r.observations,
            r.junk,
            f" (last junk: {r.last_junk!r})" if r.last_junk else "",
            self.journal.acked,
            left,
        )
        if left and not self.trial_ended:
            log.error("%d observations could not be delivered", left)
            return 1
        return 0

    def stop(self) -> None:
        self.stopping.set()
        with self.journal.lock:
            self.journal.lock.notify_all()


def main(cfg: Config) -> int:
    collector = Collector(cfg)

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: reading the rest, delivering it, then exiting", signum)
        collector.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return collector.run()


# -- the trainer's wrapper --------------------------------------------------------------

# The trainer container's command becomes ``/bin/sh -c WRAPPER trialforge-trainer CMD...``.
# It tees the output to the shared volume for the ``stdout`` source (``kubectl logs``
# still shows it, stderr merged into stdout), and writes the exit code once the output
# is complete, so the collector knows the trainer is done. The trainer's exit code is
# the container's.
WRAPPER = """\
d="${TRIALFORGE_SHARED_DIR:-/trialforge}"
rm -f "$d/exit-code"
if [ "${TRIALFORGE_METRICS_SOURCE:-stdout}" = stdout ]; then
  { "$@" 2>&1; echo $? > "$d/.trainer-exit"; } | tee -a "$d/stdout.log"
  code=$(cat "$d/.trainer-exit" 2>/dev/null || echo 1)
else
  "$@"
  code=$?
fi
echo "$code" > "$d/.exit-code.tmp" && mv "$d/.exit-code.tmp" "$d/exit-code"
exit "$code"
"""
