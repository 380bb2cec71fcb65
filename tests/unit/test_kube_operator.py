"""kube/operator.py: the operator collects the youngest generation on a timer of its loop."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from trialforge.kube.gctuning import YoungCollections


@pytest.fixture
def collections() -> Iterator[list[tuple[int, str]]]:
    """Every collection that starts, as (generation, thread), with automatic ones off."""
    seen: list[tuple[int, str]] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append((info["generation"], threading.current_thread().name))

    was_enabled = gc.isenabled()
    gc.disable()
    gc.callbacks.append(record)
    try:
        yield seen
    finally:
        gc.callbacks.remove(record)
        if was_enabled:
            gc.enable()


def test_the_youngest_generation_is_collected_on_the_loop_until_stopped(
    collections: list[tuple[int, str]],
) -> None:
    interval = 0.01

    async def main() -> int:
        loop = asyncio.get_running_loop()
        young = YoungCollections(loop, interval)
        young.start()
        async with asyncio.timeout(60):  # a bound for a broken build, not a measure of speed
            while len(collections) < 5:
                await asyncio.sleep(interval)
        young.stop()
        at_stop = len(collections)
        # The loop runs its timers in the order they are due: once a timer set now for
        # a few intervals ahead has fired, so would have the next collection.
        passed = loop.create_future()
        loop.call_later(5 * interval, passed.set_result, None)
        await passed
        return at_stop

    at_stop = asyncio.run(main())
    assert at_stop >= 5, collections
    assert set(collections) == {(0, threading.current_thread().name)}
    assert len(collections) == at_stop  # none after stop()
