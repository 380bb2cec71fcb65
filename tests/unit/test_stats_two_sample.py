"""stats/two_sample.py: Welch, Mann-Whitney, Hedges' g, the bootstrap, against SciPy and by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from trialforge.stats import (
    hedges_g,
    mann_whitney,
    welch,
)
from trialforge.stats.two_sample import bootstrap_interval, min_rank_test_p

A = [0.812, 0.825, 0.809, 0.831, 0.818, 0.822]


B = [0.801, 0.795, 0.812, 0.790, 0.806, 0.799, 0.803, 0.815]


C = [0.74, 0.91, 0.66, 0.88]  # few and spread out


@pytest.mark.parametrize(("x", "y"), [(A, B), (B, A), (C, B), (A, C), ([1.0, 2.0], [1.5, 9.0])])
def test_welch_agrees_with_scipy_and_a_hand_computation(x: list[float], y: list[float]) -> None:
    result = welch(x, y, confidence=0.95)

    vx, vy = np.var(x, ddof=1) / len(x), np.var(y, ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    diff = np.mean(x) - np.mean(y)
    half = stats.t.ppf(0.975, df) * se
    assert result.difference == pytest.approx(diff, rel=1e-12)
    assert result.df == pytest.approx(df, rel=1e-12)
    assert (result.ci_low, result.ci_high) == pytest.approx((diff - half, diff + half), rel=1e-9)

    reference = stats.ttest_ind(x, y, equal_var=False)
    assert result.t == pytest.approx(reference.statistic, rel=1e-9)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    ci = reference.confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_welch_interval_level_follows_confidence() -> None:
    wide, narrow = welch(A, B, 0.99), welch(A, B, 0.90)
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high


def test_welch_without_any_variance_is_exact() -> None:
    different = welch([0.9, 0.9, 0.9], [0.8, 0.8])
    assert different.p_value == 0.0
    assert different.ci_low == different.ci_high == pytest.approx(0.1)
    assert welch([0.5, 0.5], [0.5, 0.5]).p_value == 1.0


def test_welch_needs_two_values_per_arm() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        welch([1.0], [1.0, 2.0])


def test_mann_whitney_agrees_with_scipy_and_points_the_way_of_the_ranks() -> None:
    result = mann_whitney(A, B)
    reference = stats.mannwhitneyu(A, B, alternative="two-sided")
    assert (result.u, result.p_value) == pytest.approx((reference.statistic, reference.pvalue))
    assert result.direction == 1
    assert mann_whitney(B, A).direction == -1
    # An outlier pulls the mean down, but the ranks say higher: direction follows the test.
    outlier = mann_whitney([5.0, 6.0, 7.0, 8.0, -100.0], [1.0, 2.0, 3.0, 4.0, 0.0])
    assert outlier.direction == 1


def test_min_rank_test_p_is_the_exact_floor() -> None:
    assert min_rank_test_p(3, 3) == pytest.approx(0.1)
    assert min_rank_test_p(4, 4) == pytest.approx(2 / 70)
    # SciPy's exact test on perfectly separated arms reaches exactly that floor.
    exact = stats.mannwhitneyu([4, 5, 6, 7], [0, 1, 2, 3], method="exact").pvalue
    assert exact == pytest.approx(min_rank_test_p(4, 4))


@pytest.mark.parametrize(("x", "y"), [(A, B), (C, B), ([1.0, 2.0], [2.0, 4.0])])
def test_hedges_g_agrees_with_the_hand_formula(x: list[float], y: list[float]) -> None:
    nx, ny = len(x), len(y)
    sp = math.sqrt(((nx - 1) * np.var(x, ddof=1) + (ny - 1) * np.var(y, ddof=1)) / (nx + ny - 2))
    d = (np.mean(x) - np.mean(y)) / sp
    m = nx + ny - 2
    exact_j = math.gamma(m / 2) / (math.sqrt(m / 2) * math.gamma((m - 1) / 2))
    g = hedges_g(x, y)
    assert g == pytest.approx(exact_j * d, rel=1e-12)
    # The textbook approximation of J is close, and closer as n grows.
    assert g == pytest.approx((1 - 3 / (4 * m - 1)) * d, rel=0.02)
    assert hedges_g(y, x) == pytest.approx(-g)


def test_hedges_g_is_none_without_variance() -> None:
    assert hedges_g([1.0, 1.0], [2.0, 2.0]) is None


def test_bootstrap_interval_matches_scipy_and_is_reproducible() -> None:
    interval = bootstrap_interval(A, B, np.random.default_rng(3), 0.95, 2000)
    reference = stats.bootstrap(
        (A, B),
        lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
        n_resamples=2000,
        method="BCa",
        rng=np.random.default_rng(3),
    ).confidence_interval
    assert interval == pytest.approx((reference.low, reference.high))
    assert interval == bootstrap_interval(A, B, np.random.default_rng(3), 0.95, 2000)
    assert interval is not None and interval[0] < np.mean(A) - np.mean(B) < interval[1]


def test_bootstrap_interval_falls_back_on_degenerate_data() -> None:
    interval = bootstrap_interval([1.0, 1.0, 1.0], [0.5, 0.5], np.random.default_rng(0), 0.95, 500)
    assert interval == pytest.approx((0.5, 0.5))


def test_welch_interval_covers_the_true_difference() -> None:
    rng = np.random.default_rng(15)
    covered = 0
    for _ in range(2000):
        result = welch(rng.normal(1.0, 0.5, 6), rng.normal(0.7, 0.1, 15), 0.95)
        covered += result.ci_low <= 0.3 <= result.ci_high
    assert 0.93 <= covered / 2000 <= 0.97
