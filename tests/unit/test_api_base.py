"""api/base.py: the wire types' helpers (durations)."""

from __future__ import annotations

import pytest

from trialforge.api.base import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("45m", 2700), ("1h30m", 5400), ("2d", 172800), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
