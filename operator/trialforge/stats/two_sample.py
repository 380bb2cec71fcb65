"""One candidate against one baseline: intervals, tests and effect size.

Every function takes the candidate first and reports candidate - baseline, in the
metric's own units; whether a positive difference is good depends on the
objective's direction and is decided in :mod:`trialforge.stats.compare`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import special, stats

__all__ = [
    "MannWhitneyResult",
    "WelchResult",
    "bootstrap_interval",
    "hedges_g",
    "mann_whitney",
    "min_rank_test_p",
    "non_normal_reason",
    "pooled_sd",
    "welch",
]

Sample = Sequence[float] | NDArray[np.float64]

# The rule that makes test="auto" switch to Mann-Whitney U (see non_normal_reason).
SHAPIRO_MIN_N = 8  # below this Shapiro-Wilk has almost no power, so it proves nothing
SHAPIRO_ALPHA = 0.05
OUTLIER_MIN_N = 6  # quartiles of fewer points flag ~12% of normal samples
OUTLIER_IQR = 3.0  # Tukey's "far out" fence


@dataclass(frozen=True, slots=True)
class WelchResult:
    """Welch's unequal-variance t: difference of means, its interval and p-value."""

    difference: float
    standard_error: float
    df: float  # Welch-Satterthwaite; nan when both arms have no variance
    t: float
    p_value: float  # two-sided
    ci_low: float
    ci_high: float


def welch(candidate: Sample, baseline: Sample, confidence: float = 0.95) -> WelchResult:
    """Welch's t-test and the matching confidence interval for the difference of means.

    Computed by hand (it agrees with ``scipy.stats.ttest_ind(equal_var=False)``)
    because the special functions are ~500x faster than ``ttest_ind``'s generic
    machinery, which matters when the engine re-evaluates comparisons often.

    When neither arm varies at all the difference is exact: the interval is that
    single point and p is 0 (means differ) or 1 (they do not).
    """
    x = np.asarray(candidate, dtype=float)
    y = np.asarray(baseline, dtype=float)
    n_x, n_y = len(x), len(y)
    if n_x < 2 or n_y < 2:
        raise ValueError("Welch's test needs at least 2 values in each arm")
    difference = float(x.mean() - y.mean())
    v_x = float(x.var(ddof=1)) / n_x
    v_y = float(y.var(ddof=1)) / n_y
    se = math.sqrt(v_x + v_y)
    if se == 0.0:
        p = 1.0 if difference == 0.0 else 0.0
        t = 0.0 if difference == 0.0 else math.copysign(math.inf, difference)
        return WelchResult(difference, 0.0, math.nan, t, p, difference, difference)
    df = (v_x + v_y) ** 2 / (v_x**2 / (n_x - 1) + v_y**2 / (n_y - 1))
    t = difference / se
    p = float(2.0 * special.stdtr(df, -abs(t)))
    half_width = float(special.stdtrit(df, 0.5 + confidence / 2.0)) * se
    return WelchResult(difference, se, df, t, p, difference - half_width, difference + half_width)


@dataclass(frozen=True, slots=True)
class MannWhitneyResult:
    u: float  # the candidate's U statistic
    p_value: float  # two-sided
    direction: int  # +1 candidate tends higher, -1 lower, 0 neither


def mann_whitney(candidate: Sample, baseline: Sample) -> MannWhitneyResult:
    """Two-sided Mann-Whitney U.

    ``direction`` comes from U itself (not from the means) so that a verdict
    based on this test points the way the test found, even when an outlier
    drags the means the other way.
    """
    x = np.asarray(candidate, dtype=float)
    y = np.asarray(baseline, dtype=float)
    result = stats.mannwhitneyu(x, y, alternative="two-sided")
    u = float(result.statistic)
    centre = len(x) * len(y) / 2.0
    direction = 0 if u == centre else (1 if u > centre else -1)
    return MannWhitneyResult(u, float(result.pvalue), direction)


def min_rank_test_p(n_x: int, n_y: int) -> float:
    """The smallest two-sided p-value Mann-Whitney U can give for these sizes.

    With 3 against 3 it is 0.1: a rank test that cannot reach alpha is never
    worth switching to.
    """
    return min(1.0, 2.0 / math.comb(n_x + n_y, n_x))


def pooled_sd(candidate: Sample, baseline: Sample) -> float:
    x = np.asarray(candidate, dtype=float)
    y = np.asarray(baseline, dtype=float)
    n_x, n_y = len(x), len(y)
    ss = (n_x - 1) * x.var(ddof=1) + (n_y - 1) * y.var(ddof=1)
    return math.sqrt(float(ss) / (n_x + n_y - 2))


def hedges_g(candidate: Sample, baseline: Sample) -> float | None:
    """Standardised difference of means with the exact small-sample correction J.

    J = Γ(m/2) / (√(m/2) Γ((m-1)/2)) with m = n₁ + n₂ - 2 (Hedges 1981); the
    familiar 1 - 3/(4m - 1) is its approximation.  ``None`` when the pooled
    standard deviation is 0 (the effect is then not a finite number).
    """
    x = np.asarray(candidate, dtype=float)
    y = np.asarray(baseline, dtype=float)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("Hedges' g needs at least 2 values in each arm")
    sd = pooled_sd(x, y)
    if sd == 0.0:
        return None
    m = len(x) + len(y) - 2
    j = math.exp(special.gammaln(m / 2) - special.gammaln((m - 1) / 2)) / math.sqrt(m / 2)
    return j * float(x.mean() - y.mean()) / sd


def _mean_difference(x: NDArray[np.float64], y: NDArray[np.float64], axis: int) -> object:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def bootstrap_interval(
    candidate: Sample,
    baseline: Sample,
    rng: np.random.Generator,
    confidence: float = 0.95,
    n_resamples: int = 9999,
) -> tuple[float, float] | None:
    """A bootstrap interval for the difference of means; BCa, else percentile.

    BCa corrects the bias and skew that make the Welch interval wrong for
    skewed metrics, but is undefined for degenerate samples (tiny or constant
    arms); the percentile interval is the fallback.  ``None`` when neither is
    a finite interval.
    """
    x = np.asarray(candidate, dtype=float)
    y = np.asarray(baseline, dtype=float)
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            # Degenerate-data warnings are handled by the fallback below.
            warnings.simplefilter("ignore")
            result = stats.bootstrap(
                (x, y),
                _mean_difference,
                n_resamples=n_resamples,
                vectorized=True,
                confidence_level=confidence,
                method=method,
                rng=rng,
            )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return low, high
    return None


def non_normal_reason(name: str, values: Sample) -> str | None:
    """Why an arm's values should not go through a t-test, or ``None``.

    The rule behind ``test="auto"``: an arm is non-normal when it has a value
    beyond 3xIQR from its quartiles (n ≥ 6; one crashed seed does that), or when
    Shapiro-Wilk rejects normality at 0.05 (n ≥ 8).  Choosing the test from the
    data costs a little of the nominal error rate; both tests are valid under
    the null, so in practice the rate stays near alpha (see the simulations in
    the tests).
    """
    x = np.asarray(values, dtype=float)
    if len(x) < OUTLIER_MIN_N or np.ptp(x) == 0.0:
        return None
    q1, q3 = np.percentile(x, [25, 75])
    fence = OUTLIER_IQR * (q3 - q1)
    if np.any((x < q1 - fence) | (x > q3 + fence)):
        return f"'{name}' has a value beyond {OUTLIER_IQR:g}xIQR of its quartiles"
    if len(x) >= SHAPIRO_MIN_N:
        p = float(stats.shapiro(x).pvalue)
        if p < SHAPIRO_ALPHA:
            return f"Shapiro-Wilk rejects normality of '{name}' (p={p:.2g})"
    return None
