"""Reconcile requests, coalesced per experiment, worked off by a few threads.

Every watched change only *requests* a reconcile of the Experiment it belongs to;
the queue coalesces bursts so a hundred pod updates cost one reconcile, and
reconciles of different experiments run in parallel threads.  Only the Lease
holder acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from trialforge.kube.leader import LeaderElection
from trialforge.kube.reconcile import Reconciler
from trialforge.metrics.exporter import RECONCILE_ERRORS, RECONCILE_SECONDS

# The operator's logger, as before the split: its lines keep their name.
log = logging.getLogger("trialforge.operator")

Key = tuple[str, str]  # (namespace, experiment)


class Queue:
    """Reconcile requests, coalesced per experiment; one reconcile per experiment at a time."""

    def __init__(self, reconciler: Reconciler, leader: LeaderElection, workers: int) -> None:
        self.reconciler = reconciler
        self.leader = leader
        self.workers = workers
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._pending: set[Key] = set()
        self._running: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._soon: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.loop = asyncio.get_running_loop()

    def request(self, key: Key) -> None:
        if key in self._running:
            self._dirty.add(key)
        elif key not in self._pending:
            self._pending.add(key)
            self._queue.put_nowait(key)

    def request_threadsafe(self, key: Key) -> None:
        self.loop.call_soon_threadsafe(self.request, key)

    def request_soon(self, key: Key, seconds: float) -> None:
        """A reconcile within ``seconds``: many requests in that time make one (ingest)."""
        if key in self._pending or key in self._soon:
            return
        self._soon[key] = self.loop.call_later(seconds, self._fire_soon, key)

    def _fire_soon(self, key: Key) -> None:
        self._soon.pop(key, None)
        self.request(key)

    def request_soon_threadsafe(self, key: Key, seconds: float) -> None:
        self.loop.call_soon_threadsafe(self.request_soon, key, seconds)

    def later(self, key: Key, seconds: float) -> None:
        old = self._timers.pop(key, None)
        if old:
            old.cancel()
        self._timers[key] = self.loop.call_later(seconds, self.request, key)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._pending.discard(key)
            if not self.leader.is_leader:
                continue  # the leader will do it; we resync on winning the lease
            self._running.add(key)
            started = time.perf_counter()
            try:
                again = await asyncio.to_thread(self.reconciler.reconcile, *key)
            except Exception:
                RECONCILE_ERRORS.inc()
                log.exception("reconcile of %s/%s failed; retrying", *key)
                again = 5.0
            finally:
                RECONCILE_SECONDS.observe(time.perf_counter() - started)
                self._running.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self.request(key)
            elif again is not None:
                self.later(key, again)
