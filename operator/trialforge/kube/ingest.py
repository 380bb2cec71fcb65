"""The ingest endpoint: trials' collectors report observations here.

A batch is ``{"namespace", "trial", "token", "observations": [{"seq", "step",
"time", "metrics"}], "wait": seconds?}``.  The operator checks the trial's token,
drops what it already has (by sequence number), refuses a gap (so the collector
re-sends in order), and answers at once with two sequence numbers:

- ``received``: the last one it holds, in order.  The collector sends what comes
  after it next; a ``received`` below what it sent (a restarted operator) makes it
  send again from there.
- ``stored``: the last one written to the Trial's status in the cluster, what
  the collector may forget.

Every answer names its ``reason`` (``Accepted``, ``SequenceGap``, ``TrialEnded``, ...:
:class:`trialforge.metrics.contract.Reason`, where the batch and answer are written
down); the ``error`` text beside it is for people.

Received observations are written by a flusher, one conditional status patch per
trial at a time; what arrives while one is in flight goes into the next (group
commit), so the API server's work grows with the trials, not with the batches.
The writes are paced: a trial is written at most once per ``write_interval``,
and all trials together at most ``writes_per_second`` (a token bucket), because
a Trial with a full history costs the API server tens of milliseconds a patch,
and an unpaced flusher kept it busy on every CPU the operator needed to answer.
A trial whose collector waits for ``stored`` (its trainer has ended) is written
at once, without waiting for its interval or the budget: its pod completes only
then, and that must not depend on how many trials end together.
An operator that dies holding received observations loses nothing: the
collector still has them, and the next operator's ``received`` (its ``stored``)
asks for them again.  ``wait`` (at most 10 s) holds the answer until everything
received is stored, for a collector that has nothing new to send.
"""

from __future__ import annotations

import heapq
import hmac
import itertools
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.rest import ApiException

from trialforge.api.observation import Observation
from trialforge.api.status import TERMINAL_PHASES
from trialforge.engine import history
from trialforge.kube import names
from trialforge.kube.client import Kube
from trialforge.metrics.contract import HTTP_STATUS, Reason, answer_body, ingest_token
from trialforge.metrics.exporter import (
    OBSERVATIONS_INGESTED,
    OBSERVATIONS_PENDING,
    STORE_SECONDS,
)

log = logging.getLogger("trialforge.ingest")
# -- the limits on what a request may be (README "Metrics from trial pods"; each refusal
# names its reason, metrics.contract.Reason, and is counted in
# trialforge_observations_rejected_total{reason}) --
MAX_REQUEST_BYTES = 8 * 1024 * 1024  # a request's body: TooLarge (413) beyond it
BODY_SECONDS = 10.0  # to receive a body once its headers are in: TooSlow (408) after it
MAX_BATCH = 5000  # observations in one request: BadRequest beyond
MAX_METRICS = 100  # metrics in one observation
MAX_METRIC_NAME = 200  # characters of a metric's name
MAX_NUMBER = 2**53  # seq and step (JSON clients read numbers as doubles)
NON_FINITE = frozenset({"nan", "inf", "-inf", "+inf", "infinity", "-infinity"})
REQUESTS_PER_SECOND = 20.0  # per trial (a collector sends about 2): RateLimited (429) beyond
REQUEST_BURST = 40.0
MAX_PENDING = 20_000  # received, not yet stored, per trial: beyond it, 503 (back off)
MAX_WAIT = 10.0
INLINE_BYTES = 64 * 1024  # smaller requests are answered on the event loop, no thread hop
CACHED_TRIALS = 2000
FLUSH_WORKERS = 2
CONFLICT_RETRIES = 8
WRITE_INTERVAL = 1.0  # seconds between two status writes of one trial, at least
WRITES_PER_SECOND = 20.0  # status writes of all trials together


class WouldBlock(Exception):
    """The answer needs a read from the cluster: not on the event loop."""


# (seq, step, time, metric, value, metric, value, ...): one observation, received.
Received = tuple[Any, ...]


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    reason: str | None = None  # why it was rejected, for the metrics
    wait: float = 0.0  # hold the answer until this trial's received is stored
    key: tuple[str, str] | None = None


# The reason label of trialforge_observations_rejected_total for each refusal: the
# dashboards and alerts name these, so they stay as they were before the reason codes.
REJECTED_LABEL: dict[Reason, str] = {
    Reason.BAD_REQUEST: "malformed",
    Reason.UNAUTHORIZED: "bad_token",
    Reason.UNKNOWN_TRIAL: "unknown_trial",
    Reason.TRIAL_ENDED: "trial_ended",
    Reason.SEQUENCE_GAP: "gap",
    Reason.BUSY: "busy",
    Reason.INGEST_DISABLED: "disabled",
    Reason.TOO_LARGE: "too_large",
    Reason.RATE_LIMITED: "rate_limited",
    Reason.TOO_SLOW: "too_slow",
}


def _bad(reason: Reason, message: str, trial: _TrialBuffer | None = None) -> Answer:
    marks = {} if trial is None else {"stored": trial.stored, "received": trial.received}
    body = answer_body(reason, message, **marks)
    return Answer(HTTP_STATUS[reason], dict(body), REJECTED_LABEL[reason])


# The answer of an operator that runs without an ingest key (not counted: no ingest).
DISABLED = _bad(Reason.INGEST_DISABLED, "ingest is disabled")
# Refused by the HTTP server before the body is read (or while it is).
TOO_LARGE = _bad(
    Reason.TOO_LARGE, f"the request is over {MAX_REQUEST_BYTES} bytes; send fewer observations"
)
TOO_SLOW = _bad(Reason.TOO_SLOW, f"the body did not arrive within {BODY_SECONDS:g} s")


class _Admission:
    """A token bucket per trial: at most ``rate`` requests a second, ``burst`` at once."""

    def __init__(self, rate: float, burst: float, limit: int = 4 * 2000) -> None:
        self.rate, self.burst, self.limit = rate, max(1.0, burst), limit
        self._buckets: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def admit(self, key: tuple[str, str]) -> bool:
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = [self.burst, now]
                if len(self._buckets) > self.limit:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
            tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
            if tokens < 1.0:
                bucket[0] = tokens
                return False
            bucket[0] = tokens - 1.0
            return True


@dataclass
class _TrialBuffer:
    """One trial's observations between receipt and the status write."""

    experiment: str
    obj: dict[str, Any] | None  # the Trial as our last read or write left it
    stored: int  # the last sequence number in the Trial's status
    received: int  # the last one held here, in order (>= stored)
    # Flat tuples of numbers and strings (see ``Received``): the garbage collector
    # stops tracking such a tuple at its first pass, not one that holds a dict or
    # another tuple. As Observation objects, the tens of thousands held under load
    # made every collection of the middle generation take 20-60 ms.
    pending: list[Received] = field(default_factory=list)
    # (last seq, monotonic time) of each accepted batch not yet stored: the store delay.
    arrivals: list[tuple[int, float]] = field(default_factory=list)
    flushing: bool = False  # a write is scheduled or in flight
    due: float | None = None  # when the scheduled write starts (monotonic)
    last_write: float = -math.inf  # when the last write started (monotonic)
    failures: int = 0  # writes failed in a row
    paid: bool = False  # the scheduled write has its token from the budget (pacer only)
    ended: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Called (from a flusher thread) once everything received is stored.
    waiters: list[Callable[[], None]] = field(default_factory=list)

    def drop_pending(self) -> None:
        """Forget what is held and not stored (the caller holds the lock)."""
        OBSERVATIONS_PENDING.dec(len(self.pending))
        self.pending.clear()
        self.arrivals.clear()

    def caught_up(self) -> bool:
        return self.ended or self.stored >= self.received

    def wake(self) -> list[Callable[[], None]]:
        """The waiters to call now (outside the lock), when caught up."""
        if not self.caught_up():
            return []
        woken, self.waiters = self.waiters, []
        return woken


class Pace:
    """A token bucket: at most ``rate`` a second, ``burst`` at once."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.clock = clock
        self._tokens = self.burst
        self._at = clock()

    def reserve(self) -> float:
        """Take a token: how long to wait before using it (0: now). A token not there
        yet is taken in advance, so waiters are spaced by ``1 / rate``."""
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate) - 1.0
        self._at = now
        return max(0.0, -self._tokens / self.rate)


class Ingest:
    def __init__(
        self,
        kube: Kube,
        key: bytes,
        directions_for: Callable[[str, str], Mapping[str, str] | None],
        on_stored: Callable[[str, str], None],
        tails_for: Callable[[str, str], Mapping[str, int] | None] | None = None,
        rules_ttl: float = 10.0,
        workers: int = FLUSH_WORKERS,
        write_interval: float = WRITE_INTERVAL,
        writes_per_second: float = WRITES_PER_SECOND,
        requests_per_second: float = REQUESTS_PER_SECOND,
        request_burst: float = REQUEST_BURST,
    ) -> None:
        if write_interval < 0 or writes_per_second <= 0 or requests_per_second <= 0:
            raise ValueError(
                "write_interval must be >= 0, writes_per_second and requests_per_second > 0"
            )
        self._admission = _Admission(requests_per_second, request_burst)
        self.kube = kube
        self.key = key
        self.directions_for = directions_for  # (namespace, experiment) -> metric directions
        self.tails_for = tails_for  # (namespace, experiment) -> last points a metric keeps
        self.on_stored = on_stored
        self.rules_ttl = rules_ttl
        self._rules: dict[tuple[str, str], tuple[float, dict[str, str], dict[str, int]]] = {}
        self._rules_lock = threading.Lock()
        self._trials: OrderedDict[tuple[str, str], _TrialBuffer] = OrderedDict()
        self._trials_lock = threading.Lock()
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self._flusher = ThreadPoolExecutor(workers, thread_name_prefix="trialforge-ingest")
        self._closing = threading.Event()
        self.write_interval = write_interval
        self._pace = Pace(writes_per_second, burst=writes_per_second)
        # Scheduled writes: (due, tie-breaker, key, buffer); an entry whose due is no
        # longer its buffer's was moved earlier and is skipped.
        self._schedule: list[tuple[float, int, tuple[str, str], _TrialBuffer]] = []
        self._schedule_changed = threading.Condition()
        self._tie = itertools.count()
        self._pacer = threading.Thread(
            target=self._run_pacer, name="trialforge-ingest-pacer", daemon=True
        )
        self._pacer.start()

    def close(self) -> None:
        """Stop storing (what is held is the collectors' to send again to the next operator)."""
        self._closing.set()
        with self._schedule_changed:
            self._schedule_changed.notify()
        self._flusher.shutdown(wait=False, cancel_futures=True)

    # -- the rules the history keeps -----------------------------------------------------

    def rules(self, namespace: str, experiment: str) -> tuple[dict[str, str], dict[str, int]]:
        """The objectives' directions and tails, cached for a few seconds (not a read
        of the Experiment per request)."""
        key = (namespace, experiment)
        now = time.monotonic()
        with self._rules_lock:
            cached = self._rules.get(key)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        directions = dict(self.directions_for(namespace, experiment) or {})
        tails = dict((self.tails_for(namespace, experiment) if self.tails_for else None) or {})
        with self._rules_lock:
            self._rules[key] = (now + self.rules_ttl, directions, tails)
        return directions, tails

    # -- per-trial buffers ---------------------------------------------------------------

    def _buffer(self, namespace: str, trial: str, may_block: bool) -> _TrialBuffer | None:
        """The trial's buffer, read from the cluster the first time (None: no such trial)."""
        key = (namespace, trial)
        with self._trials_lock:
            buffer = self._trials.get(key)
            if buffer is not None:
                self._trials.move_to_end(key)
                return buffer
            if not may_block:
                raise WouldBlock
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one GET per trial, however many requests arrive at once
            with self._trials_lock:
                buffer = self._trials.get(key)
            if buffer is not None:
                return buffer
            obj = self.kube.get_trial(namespace, trial)
            if obj is None:
                with self._trials_lock:
                    self._loading.pop(key, None)
                return None
            status = obj.get("status") or {}
            stored = int(status.get("lastSequence") or 0)
            buffer = _TrialBuffer(obj["spec"]["experiment"], obj, stored, stored)
            buffer.ended = status.get("phase") in TERMINAL_PHASES
            with self._trials_lock:
                if not buffer.ended:  # an ended trial is read again if asked again
                    self._trials[key] = buffer
                    self._evict()
                self._loading.pop(key, None)
            return buffer

    def forget(self, namespace: str, trial: str, why: str) -> None:
        """The Trial has ended or is gone (the watch says so): it takes no more, and a
        Trial made again under its name starts afresh."""
        with self._trials_lock:
            buffer = self._trials.pop((namespace, trial), None)
        if buffer is not None:
            self._end(buffer, why)

    def _evict(self) -> None:
        """Forget the oldest idle buffers past the cap (a later request reads them again)."""
        excess = len(self._trials) - CACHED_TRIALS
        for key in list(self._trials):
            if excess <= 0:
                break
            buffer = self._trials[key]
            if not buffer.pending and not buffer.flushing:
                del self._trials[key]
                excess -= 1

    def _held(self, namespace: str, trial: str) -> _TrialBuffer | None:
        with self._trials_lock:
            return self._trials.get((namespace, trial))

    def progress(self, namespace: str, trial: str) -> dict[str, int]:
        """``stored`` and ``received`` for a trial held here (nothing if none is)."""
        buffer = self._held(namespace, trial)
        if buffer is None:
            return {}
        with buffer.lock:
            return {"stored": buffer.stored, "received": buffer.received}

    def when_stored(self, namespace: str, trial: str, callback: Callable[[], None]) -> bool:
        """Call ``callback`` once everything received for the trial is stored; False
        (and no call) when it is already, or the trial is not held here."""
        buffer = self._held(namespace, trial)
        if buffer is None:
            return False
        with buffer.lock:
            if buffer.caught_up():
                return False
            buffer.waiters.append(callback)
        # The trainer has ended and its pod completes once this is stored: a write that
        # waits for the trial's interval starts now (one in flight schedules the next
        # at once when it sees the waiter).
        self._schedule_write(namespace, trial, buffer, time.monotonic(), only_earlier=True)
        return True

    # -- receipt -------------------------------------------------------------------------

    def handle_bytes(self, raw: bytes, may_block: bool = True) -> Answer:
        """The answer to one request. ``may_block=False`` (on the event loop): raise
        :class:`WouldBlock` instead of reading the Trial from the cluster."""
        if len(raw) > MAX_REQUEST_BYTES:
            return TOO_LARGE
        try:
            payload = json.loads(raw, parse_constant=_no_constant)
        except ValueError as exc:
            return _bad(Reason.BAD_REQUEST, f"the body is not JSON: {str(exc)[:200]}")
        except RecursionError:
            return _bad(Reason.BAD_REQUEST, "the body is not JSON: nested too deep")
        return self.handle(payload, may_block)

    def handle(self, payload: Any, may_block: bool = True) -> Answer:
        if not isinstance(payload, dict):
            return _bad(Reason.BAD_REQUEST, "the body must be a JSON object")
        namespace, trial, token = (
            payload.get("namespace"),
            payload.get("trial"),
            payload.get("token"),
        )
        batch = payload.get("observations")
        if not all(isinstance(v, str) and 0 < len(v) <= 253 for v in (namespace, trial, token)):
            return _bad(
                Reason.BAD_REQUEST,
                "namespace, trial and token are required strings of at most 253 characters",
            )
        if not isinstance(batch, list) or len(batch) > MAX_BATCH:
            return _bad(Reason.BAD_REQUEST, f"observations must be a list of at most {MAX_BATCH}")
        wait = payload.get("wait", 0)
        if (
            isinstance(wait, bool)
            or not isinstance(wait, int | float)
            or not math.isfinite(wait)
            or wait < 0
        ):
            return _bad(Reason.BAD_REQUEST, "wait must be a number of seconds >= 0")
        if not hmac.compare_digest(
            token.encode(errors="replace"), ingest_token(self.key, namespace, trial).encode()
        ):
            return _bad(Reason.UNAUTHORIZED, "the token is not this trial's")
        if not may_block and self._held(namespace, trial) is None:
            raise WouldBlock  # before its admission is counted: the thread counts it
        if not self._admission.admit((namespace, trial)):
            return _bad(
                Reason.RATE_LIMITED,
                f"more than {self._admission.rate:g} requests a second for trial {trial}; "
                "back off and send again",
            )
        try:
            parsed = sorted(map(_received, batch), key=lambda x: x[0])
        except KeyError as exc:
            return _bad(Reason.BAD_REQUEST, f"bad observation: {exc} is missing")
        except (TypeError, ValueError, OverflowError) as exc:
            return _bad(Reason.BAD_REQUEST, f"bad observation: {exc}")
        for before, after in itertools.pairwise(parsed):
            if before[0] == after[0]:
                return _bad(Reason.BAD_REQUEST, f"bad observation: seq {after[0]} is given twice")
        buffer = self._buffer(namespace, trial, may_block)
        if buffer is None:
            return _bad(Reason.UNKNOWN_TRIAL, f"no trial {namespace}/{trial}")
        now = time.monotonic()
        with buffer.lock:
            if buffer.ended:
                return _bad(Reason.TRIAL_ENDED, f"trial {trial} has ended", buffer)
            fresh = [o for o in parsed if o[0] > buffer.received]
            if fresh and fresh[0][0] != buffer.received + 1:
                return _bad(
                    Reason.SEQUENCE_GAP,
                    f"expected sequence {buffer.received + 1}, got {fresh[0][0]}",
                    buffer,
                )
            # Keep only the contiguous run; a later gap is re-sent after this answer.
            run = fresh[:1]
            for o in fresh[1:]:
                if o[0] != run[-1][0] + 1:
                    break
                run.append(o)
            if run and len(buffer.pending) + len(run) > MAX_PENDING:
                return _bad(Reason.BUSY, "too much is waiting to be stored; retry", buffer)
            if run:
                buffer.pending.extend(run)
                buffer.arrivals.append((run[-1][0], now))
                buffer.received = run[-1][0]
                OBSERVATIONS_PENDING.inc(len(run))
                schedule = not buffer.flushing
                buffer.flushing = True
            else:
                schedule = False
            body = answer_body(
                Reason.ACCEPTED, stored=buffer.stored, received=buffer.received, accepted=len(run)
            )
            write_at = buffer.last_write + self.write_interval
        if schedule:
            self._schedule_write(namespace, trial, buffer, max(now, write_at))
        return Answer(
            HTTP_STATUS[Reason.ACCEPTED],
            dict(body),
            wait=min(float(wait), MAX_WAIT),
            key=(namespace, trial),
        )

    # -- storage -------------------------------------------------------------------------

    def _schedule_write(
        self,
        namespace: str,
        trial: str,
        buffer: _TrialBuffer,
        at: float,
        only_earlier: bool = False,
    ) -> None:
        """Write the trial at ``at``, or earlier if it is scheduled earlier already.
        ``only_earlier``: move a scheduled write earlier, schedule none."""
        with self._schedule_changed:
            if buffer.due is None and only_earlier:
                return
            if buffer.due is not None and buffer.due <= at:
                return
            buffer.due = at
            heapq.heappush(self._schedule, (at, next(self._tie), (namespace, trial), buffer))
            self._schedule_changed.notify()

    def _run_pacer(self) -> None:
        """Start each scheduled write when it is due and the write budget allows."""
        while not self._closing.is_set():
            with self._schedule_changed:
                if not self._schedule:
                    self._schedule_changed.wait()
                    continue
                at, _, key, buffer = self._schedule[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self._schedule_changed.wait(wait)
                    continue
                heapq.heappop(self._schedule)
                if buffer.due != at:
                    continue  # moved earlier: that entry has run or will
                buffer.due = None
            with buffer.lock:
                # Its collector waits (the trainer has ended): written now, outside the
                # budget. A waiter that comes later moves the scheduled write to now.
                ending = bool(buffer.waiters)
            if not ending and not buffer.paid:
                delay = self._pace.reserve()
                if delay > 0:
                    # Back in the schedule, not asleep here: the trainer's end can still
                    # move it earlier, and other trials' writes go on being started.
                    buffer.paid = True
                    self._schedule_write(*key, buffer, time.monotonic() + delay)
                    continue
            buffer.paid = False
            with buffer.lock:
                buffer.last_write = time.monotonic()
            try:
                self._flusher.submit(self._flush, *key, buffer)
            except RuntimeError:  # shut down
                return

    def _flush(self, namespace: str, trial: str, buffer: _TrialBuffer) -> None:
        """Write what the trial's buffer holds now (group commit), then schedule the
        next write if more has arrived meanwhile."""
        with buffer.lock:
            todo = list(buffer.pending)
            if not todo or buffer.ended or self._closing.is_set():
                buffer.flushing = False
                return
        try:
            self._store(namespace, trial, buffer, todo)
            retry = 0.0
            buffer.failures = 0
        except Exception as exc:  # the API server is down or refused: keep it, retry
            buffer.failures += 1
            retry = min(5.0, 0.1 * 2**buffer.failures)
            log.warning(
                "storing %d observations of %s/%s failed (%s); retrying in %.1fs",
                len(todo),
                namespace,
                trial,
                exc,
                retry,
            )
        now = time.monotonic()
        with buffer.lock:
            if not buffer.pending or buffer.ended or self._closing.is_set():
                buffer.flushing = False
                return
            at = (
                now + retry
                if retry
                else (now if buffer.waiters else buffer.last_write + self.write_interval)
            )
        self._schedule_write(namespace, trial, buffer, max(now, at))

    def _store(
        self,
        namespace: str,
        trial: str,
        buffer: _TrialBuffer,
        todo: list[Received],
    ) -> None:
        obj = buffer.obj
        for _ in range(CONFLICT_RETRIES):  # the reconciler's writes move it: re-read, retry
            if obj is None:
                obj = self.kube.get_trial(namespace, trial)
                if obj is None:
                    self._end(buffer, "the trial is gone", (namespace, trial))
                    return
            status = obj.get("status") or {}
            stored = int(status.get("lastSequence") or 0)
            if status.get("phase") in TERMINAL_PHASES:
                self._end(buffer, "the trial has ended", (namespace, trial), stored)
                return
            fresh = [o for o in todo if o[0] > stored]
            if fresh and fresh[0][0] != stored + 1:
                # The status holds less than this buffer started from (a Trial made
                # again under the same name): start over from what it holds.
                with buffer.lock:
                    buffer.drop_pending()
                    buffer.obj, buffer.stored, buffer.received = obj, stored, stored
                    woken = buffer.wake()
                for wake in woken:
                    wake()
                return
            if fresh:
                directions, tails = self.rules(namespace, buffer.experiment)
                observations = [
                    Observation(o[1], dict(zip(o[3::2], o[4::2], strict=True)), o[2]) for o in fresh
                ]
                new_status = {
                    "history": history.merge(
                        status.get("history") or {}, observations, directions, tails=tails
                    ),
                    "metrics": history.summarize(
                        status.get("metrics") or {}, observations, directions
                    ),
                    "lastSequence": fresh[-1][0],
                }
                try:
                    updated = self.kube.patch_status(
                        names.TRIALS,
                        namespace,
                        trial,
                        new_status,
                        obj["metadata"]["resourceVersion"],
                    )
                except ApiException as exc:
                    if exc.status == 409:
                        obj = None
                        continue
                    if exc.status == 404:
                        self._end(buffer, "the trial is gone", (namespace, trial))
                        return
                    buffer.obj = None
                    raise
                obj = updated if isinstance(updated, dict) else None
                stored = fresh[-1][0]
            self._stored(namespace, trial, buffer, obj, stored)
            return
        buffer.obj = None
        raise RuntimeError("the trial kept changing under the write")

    def _stored(
        self,
        namespace: str,
        trial: str,
        buffer: _TrialBuffer,
        obj: dict[str, Any] | None,
        stored: int,
    ) -> None:
        now = time.monotonic()
        with buffer.lock:
            kept = [p for p in buffer.pending if p[0] > stored]
            done = len(buffer.pending) - len(kept)
            buffer.pending = kept
            while buffer.arrivals and buffer.arrivals[0][0] <= stored:
                STORE_SECONDS.observe(now - buffer.arrivals.pop(0)[1])
            buffer.obj = obj
            buffer.stored = max(buffer.stored, stored)
            buffer.received = max(buffer.received, stored)
            woken = buffer.wake()
        for wake in woken:
            wake()
        OBSERVATIONS_PENDING.dec(done)
        OBSERVATIONS_INGESTED.inc(done)
        if done:
            self.on_stored(namespace, buffer.experiment)

    def _end(
        self,
        buffer: _TrialBuffer,
        why: str,
        key: tuple[str, str] | None = None,
        stored: int | None = None,
    ) -> None:
        """The trial takes no more: drop what it holds, wake its waiters, forget it."""
        with buffer.lock:
            if buffer.pending:
                log.warning("%d observations were not stored: %s", len(buffer.pending), why)
            buffer.drop_pending()
            buffer.ended = True
            buffer.obj = None
            if stored is not None:
                buffer.stored = stored
            buffer.received = buffer.stored
            woken = buffer.wake()
        for wake in woken:
            wake()
        if key is not None:
            with self._trials_lock:
                if self._trials.get(key) is buffer:
                    del self._trials[key]


def _no_constant(name: str) -> Any:
    """JSON has no NaN or Infinity (Python's reader takes them): non-finite values travel
    as the strings "nan", "inf", "-inf"."""
    raise ValueError(f"{name} is not JSON (send non-finite values as strings)")


def _integer(raw: dict[str, Any], field: str, low: int) -> int:
    value = raw[field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be an integer, not {_shown(value)}")
    if not low <= value <= MAX_NUMBER:
        raise ValueError(f"{field} {value} is out of range ({low} to {MAX_NUMBER})")
    return value


def _shown(value: Any) -> str:
    return f"{type(value).__name__} {json.dumps(value)[:40]}"


def _received(raw: Any) -> Received:
    """One observation of a request, checked, as a flat tuple (see ``Received``)."""
    if not isinstance(raw, dict):
        raise TypeError("an observation must be an object")
    seq = _integer(raw, "seq", 1)
    step = _integer(raw, "step", 0)
    metrics = raw.get("metrics")
    if not isinstance(metrics, dict):
        raise TypeError(f"seq {seq}: metrics must be an object")
    if len(metrics) > MAX_METRICS:
        raise ValueError(f"seq {seq}: {len(metrics)} metrics; at most {MAX_METRICS}")
    values = {}
    for name, value in metrics.items():
        if not 0 < len(name) <= MAX_METRIC_NAME or not name.isprintable():
            raise ValueError(
                f"seq {seq}: a metric name must be 1 to {MAX_METRIC_NAME} printable characters"
            )
        if isinstance(value, str) and value.lower() in NON_FINITE:
            values[name] = float(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            values[name] = float(value)  # an int beyond a double's range: OverflowError
        else:
            raise TypeError(f"seq {seq}: metric {name!r} is not a number: {_shown(value)}")
    t = raw.get("time")
    if t is not None:
        if isinstance(t, bool) or not isinstance(t, int | float):
            raise TypeError(f"seq {seq}: time must be Unix seconds or null, not {_shown(t)}")
        t = float(t)
        if not math.isfinite(t):
            t = None
    return (seq, step, t, *itertools.chain.from_iterable(values.items()))


def objective_tails(reconciler: Any, namespace: str, name: str) -> dict[str, int] | None:
    """How many last points each objective's history must keep: its ``window`` when
    its final value is the mean of the last k (the reconciler's cached spec)."""
    cached = reconciler._cache.get((namespace, name))
    spec = cached.planner.spec if cached else None
    if spec is None:
        return None
    return history.rules(spec)[1]
