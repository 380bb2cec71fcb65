"""stats/power.py: power, sample sizes and the minimum detectable effect."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from trialforge.stats import (
    minimum_detectable_effect,
    sample_size_per_arm,
    t_test_power,
)


def test_power_agrees_with_the_noncentral_t_and_textbook_sample_sizes() -> None:
    n, d = 12, 0.9
    df, nc = 2 * n - 2, d * math.sqrt(n / 2)
    crit = stats.t.ppf(0.975, df)
    expected = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
    assert t_test_power(d, n, n) == pytest.approx(expected, rel=1e-9)
    # Cohen's (and G*Power's) figures for a two-sided test at 0.05 and 80% power.
    assert [sample_size_per_arm(d) for d in (0.2, 0.5, 0.8, 1.0)] == [394, 64, 26, 17]
    assert sample_size_per_arm(0.0) is None and sample_size_per_arm(1e-4) is None


@pytest.mark.parametrize(("nx", "ny"), [(3, 3), (5, 12), (30, 30)])
def test_minimum_detectable_effect_has_the_asked_power(nx: int, ny: int) -> None:
    mde = minimum_detectable_effect(nx, ny)
    assert t_test_power(mde, nx, ny) == pytest.approx(0.8, abs=1e-6)
