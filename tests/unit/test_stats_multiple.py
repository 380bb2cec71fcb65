"""stats/multiple.py: Holm's step-down adjustment."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trialforge.stats import (
    holm,
)


def _holm_rejections(p: list[float], alpha: float) -> set[int]:
    """Holm's procedure as written in textbooks: step down until one fails."""
    rejected: set[int] = set()
    for rank, index in enumerate(sorted(range(len(p)), key=lambda i: p[i])):
        if p[index] > alpha / (len(p) - rank):
            break
        rejected.add(index)
    return rejected


def test_holm_hand_worked_example() -> None:
    # Sorted: 0.005x4 = 0.02, 0.01x3 = 0.03, 0.03x2 = 0.06, 0.04x1 = 0.04 -> 0.06 (running max).
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == pytest.approx([0.02])
    assert holm([]).shape == (0,)


@given(
    p=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12),
    alpha=st.sampled_from([0.01, 0.05, 0.1]),
)
def test_holm_properties(p: list[float], alpha: float) -> None:
    adjusted = holm(p)
    assert np.all(adjusted >= np.asarray(p) - 1e-15)
    assert np.all(adjusted <= 1.0)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(adjusted[order]) >= 0)  # same order as the raw p-values
    assert {i for i, q in enumerate(adjusted) if q <= alpha} == _holm_rejections(p, alpha)


def test_holm_on_a_batch_equals_row_by_row() -> None:
    batch = np.random.default_rng(0).uniform(size=(50, 5))
    assert np.array_equal(holm(batch), np.array([holm(row) for row in batch]))


@pytest.mark.parametrize("bad", [[0.1, math.nan], [1.2], [-0.1]])
def test_holm_rejects_values_that_are_not_p_values(bad: list[float]) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm(bad)
