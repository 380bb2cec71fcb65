"""The collector: a source thread feeding the journal, a sender draining it to the ingest."""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from trialforge.metrics.collector.client import IngestClient, backoff_delays, send_pause
from trialforge.metrics.collector.config import Config
from trialforge.metrics.collector.journal import Journal
from trialforge.metrics.collector.sources import (
    MAX_LINE,
    SOURCES,
    reader_state,
    restore_reader,
)
from trialforge.metrics.contract import IngestAnswer, Reason
from trialforge.metrics.parsers import ObservationReader

log = logging.getLogger("trialforge.collector")

STATE_DIR = "collector"  # the journal's folder on the shared volume
PROGRESS, IDLE, FAILED = "progress", "idle", "failed"  # what one send round came to


class Collector:
    """One trial's collector: a source thread feeding the journal, a sender draining it."""

    def __init__(self, cfg: Config, sleep: Callable[[float], None] | None = None) -> None:
        self.cfg = cfg
        self.state_dir = cfg.shared_dir / STATE_DIR
        self.journal = Journal(self.state_dir, cfg.buffer_size)
        self.client = IngestClient(cfg)
        saved = self.journal.state
        kind = SOURCES[cfg.source]
        self.reader = ObservationReader(kind.parser(cfg), max_line=MAX_LINE)
        restore_reader(self.reader, saved.get("reader") or {})
        self.source = kind.open(cfg, self.journal, self.reader, saved.get("source") or {})
        self.stopping = threading.Event()  # the trainer has exited, or SIGTERM
        self.drained = threading.Event()  # the source has been read to its end
        self.trial_ended = False
        self.sent_requests = 0
        self.failures = 0
        self.sent = 0  # the last seq the operator said it holds (its "received")
        # A fresh collector asks first where the trial's sequence stands (see _sync).
        self.synced = self.journal.resumed
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

    def trainer_exited(self) -> bool:
        return self.cfg.exit_marker.exists()

    # The source side ------------------------------------------------------------------

    def _read_source(self) -> None:
        try:
            if not self.source.polled:
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

    def _urgent(self) -> bool:
        """The end, or a journal half full: send now, wait for ``stored`` now."""
        return self.drained.is_set() or self.journal.room() < self.cfg.buffer_size // 2

    def _send_round(self) -> str:
        """One request, or a short wait for something to send: PROGRESS (go on at
        once), IDLE (nothing to do yet) or FAILED (back off before trying again)."""
        if not self.synced:
            return self._sync()
        journal = self.journal
        urgent = self._urgent()
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
        answer = self.client.send(items, wait)
        self.last_request = time.monotonic()
        self.next_request = self.last_request + send_pause(self.cfg.send_interval, self.rng)
        self.full_batch = len(items) == self.cfg.batch_size  # more may wait: no linger
        self.sent_requests += 1
        if answer.reason is not Reason.ACCEPTED:
            self.failures += 1  # answers that took nothing of the batch
        return ON_REASON[answer.reason](self, answer, bool(items), acked_before)

    def _sync(self) -> str:
        """The first request of a fresh collector (a new pod of the trial): an empty
        batch, whose answer says the last sequence number the operator holds for the
        trial.  A trial that ran before (a pod the Job made again after a disruption,
        a Pause and resume, a Kueue re-admission) holds its earlier runs' numbers:
        this run's observations are numbered after them, so none is taken for one
        already stored and dropped (issue 22)."""
        answer = self.client.send([], 0.0)
        self.last_request = time.monotonic()
        self.sent_requests += 1
        if answer.reason is not Reason.ACCEPTED or answer.received is None:
            self.failures += 1
            return ON_REASON[answer.reason](self, answer, False, self.journal.acked)
        if answer.received > 0:
            log.info("the trial holds seq 1..%d already: numbering after it", answer.received)
            self.journal.renumber(answer.received, quiet=True)
        self.sent = answer.received
        self.synced = True
        return PROGRESS

    # What each answer's reason asks for -----------------------------------------------

    def _on_accepted(self, answer: IngestAnswer, sent: bool, acked_before: int) -> str:
        if answer.stored is None or answer.received is None:
            return self._on_other(answer, sent, acked_before)
        self.journal.ack(answer.stored)
        if answer.received < self.sent:
            log.info(
                "the operator holds up to seq %d, not %d (it restarted): sending again",
                answer.received,
                self.sent,
            )
        self.sent = answer.received
        return PROGRESS if sent or self.journal.acked > acked_before else FAILED

    def _on_sequence_gap(self, answer: IngestAnswer, sent: bool, acked_before: int) -> str:
        if answer.stored is None or answer.received is None:
            return self._on_other(answer, sent, acked_before)
        if answer.stored < self.journal.acked:
            self.journal.renumber(answer.stored)
            self.sent = answer.stored
            return PROGRESS
        self.journal.ack(answer.stored)
        self.sent = answer.received  # send again after what it holds
        return PROGRESS

    def _on_trial_ended(self, answer: IngestAnswer, sent: bool, acked_before: int) -> str:
        pending = len(self.journal.pending)
        log.warning("the trial has ended; %d observations were not stored", pending)
        self.trial_ended = True
        return FAILED

    def _on_other(self, answer: IngestAnswer, sent: bool, acked_before: int) -> str:
        """Not taken this time (busy, refused, unreachable): back off and send again."""
        log.warning(
            "ingest answered %s%s: %s; retrying",
            answer.status or "nothing",
            f" ({answer.reason})" if answer.reason else "",
            answer.error or "no reason given",
        )
        return FAILED

    # The whole life -------------------------------------------------------------------

    def run(self) -> int:
        cfg = self.cfg
        if cfg.rank != 0:
            log.info("rank %d: only rank 0 reports; waiting for the trainer to end", cfg.rank)
            while not (self.stopping.is_set() or self.trainer_exited()):
                self.stopping.wait(1.0)
            return 0
        self.source.start()
        reader = threading.Thread(target=self._read_source, name="source", daemon=True)
        reader.start()
        try:
            self._deliver()
        finally:
            self.source.close()
            self.client.close()
        return self._finish()

    def _deliver(self) -> None:
        """Send until everything is stored after the trainer's end, the flush timeout
        passes, or the trial takes no more."""
        cfg = self.cfg
        delays = backoff_delays(cfg.backoff_base, cfg.backoff_cap)
        deadline: float | None = None
        while not self.trial_ended:
            if self.drained.is_set() and deadline is None:
                deadline = time.monotonic() + cfg.flush_timeout
            if self.drained.is_set() and not self.journal.pending:
                return
            if deadline is not None and time.monotonic() > deadline:
                return
            outcome = self._send_round()
            if outcome == PROGRESS:
                delays = backoff_delays(cfg.backoff_base, cfg.backoff_cap)
            elif outcome == FAILED and not self.trial_ended:
                delay = next(delays)
                if deadline is not None:
                    delay = min(delay, max(0.0, deadline - time.monotonic()))
                time.sleep(delay) if self.stopping.is_set() else self._sleep(delay)

    def _finish(self) -> int:
        """Say what became of it all: 1 when something could not be delivered."""
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


# What the collector does with each answer, by its reason (None: no answer at all, or
# a reason this collector does not know, from a newer operator). The collector acts on
# these codes only, never on the error text.
ON_REASON: dict[Reason | None, Callable[[Collector, IngestAnswer, bool, int], str]] = {
    Reason.ACCEPTED: Collector._on_accepted,
    Reason.SEQUENCE_GAP: Collector._on_sequence_gap,
    Reason.TRIAL_ENDED: Collector._on_trial_ended,
    Reason.BUSY: Collector._on_other,
    Reason.BAD_REQUEST: Collector._on_other,
    Reason.UNAUTHORIZED: Collector._on_other,
    Reason.UNKNOWN_TRIAL: Collector._on_other,
    Reason.INGEST_DISABLED: Collector._on_other,
    Reason.TOO_LARGE: Collector._on_other,
    Reason.RATE_LIMITED: Collector._on_other,
    Reason.TOO_SLOW: Collector._on_other,
    None: Collector._on_other,
}


def main(cfg: Config) -> int:
    collector = Collector(cfg)

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: reading the rest, delivering it, then exiting", signum)
        collector.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return collector.run()
