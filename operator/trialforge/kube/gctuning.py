"""The operator process's interpreter settings: GIL switch interval and garbage collection.

Measured, not guessed: bench/ingest.py and bench/RESULTS.md say what each one
bought under ingest load.
"""

from __future__ import annotations

import asyncio
import gc
import sys

SWITCH_INTERVAL = 0.0005  # seconds
GC_THRESHOLDS = (10_000, 10, 100)  # default (700, 10, 10)
YOUNG_COLLECTION_INTERVAL = 0.1  # seconds


def tune_interpreter() -> None:
    """Once, after start-up's imports and before kopf runs."""
    # The event loop (watches, ingest answers) gives up the GIL on every socket call
    # and waits for it while the flusher and reconcile threads compute: with the
    # default 5 ms switch interval that wait, not the work, set the ingest's answer
    # time under load (bench/ingest.py).
    sys.setswitchinterval(SWITCH_INTERVAL)
    # With the default thresholds a full collection ran about once a second under
    # ingest load and stopped everything for 100-160 ms (the Trials in the caches are
    # hundreds of thousands of objects): freeze what start-up made, and collect the
    # young generations less often and the old one rarely (bench/ingest.py); the
    # youngest is also collected on a timer (YoungCollections).
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class YoungCollections:
    """Collects the youngest generation every ``interval`` seconds, on the event loop.

    The threshold counts allocations minus deallocations, and the flusher and the
    reconciler free old Trials (thousands of objects each) as fast as the ingest
    makes observations: the youngest generation grew to 50,000-70,000 objects,
    most of them held observations, before a collection came, and that collection
    took 20-35 ms of CPU in whichever thread it fell on while every answer waited
    for the GIL.  Collected every 100 ms it holds a few thousand and takes about a
    millisecond, between two callbacks of the loop (bench/ingest.py, a
    ``gc.callbacks`` probe; bench/RESULTS.md).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._handle = self.loop.call_later(self.interval, self._collect)

    def _collect(self) -> None:
        gc.collect(0)
        self._handle = self.loop.call_later(self.interval, self._collect)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
