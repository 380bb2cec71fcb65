"""The ingest's write budget (kube/ingest.py ``Pace``): a token bucket on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trialforge.kube.ingest import Pace


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_goes_at_once_then_writes_are_spaced_by_the_rate() -> None:
    clock = Clock()
    pace = Pace(rate=4.0, burst=2.0, clock=clock)
    assert [pace.reserve(), pace.reserve()] == [0.0, 0.0]
    # The third and fourth are taken in advance: each waits one more 1/rate.
    assert pace.reserve() == pytest.approx(0.25)
    assert pace.reserve() == pytest.approx(0.5)
    clock.now += 0.5  # both have been used; the bucket is empty again
    assert pace.reserve() == pytest.approx(0.25)


def test_an_idle_bucket_refills_only_up_to_the_burst() -> None:
    clock = Clock()
    pace = Pace(rate=1.0, burst=3.0, clock=clock)
    clock.now += 3600
    assert [pace.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert pace.reserve() == pytest.approx(1.0)


@given(
    rate=st.floats(0.5, 100.0),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=200),
)
def test_writes_never_exceed_burst_plus_rate_times_time(
    rate: float, burst: int, gaps: list[float]
) -> None:
    """Wherever the requests fall, the writes started by time t (each at its request
    time plus its wait) are at most burst + rate * t."""
    clock = Clock()
    start = clock.now
    pace = Pace(rate=rate, burst=float(burst), clock=clock)
    starts = []
    for gap in gaps:
        clock.now += gap
        starts.append(clock.now + pace.reserve())
    for i, at in enumerate(sorted(starts)):
        assert i + 1 <= burst + rate * (at - start) + 1e-6
