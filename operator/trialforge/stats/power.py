"""Power of the two-sample t-test, for the "n is too small" note.

Exact under the textbook model (normal data, equal variances): the test
statistic follows a noncentral t with n₁ + n₂ - 2 degrees of freedom and
noncentrality d·√(n₁n₂/(n₁+n₂)).  A normal approximation would overstate the
power at the n = 3..5 repeats where this note matters most.
"""

from __future__ import annotations

import math
from functools import lru_cache

from scipy import optimize, special

__all__ = ["minimum_detectable_effect", "sample_size_per_arm", "t_test_power"]

MAX_N_PER_ARM = 100_000


def t_test_power(effect: float, n_x: int, n_y: int, alpha: float = 0.05) -> float:
    """Probability that a two-sided t-test at ``alpha`` rejects when the true
    standardised difference is ``effect`` (Cohen's d)."""
    if n_x < 2 or n_y < 2:
        raise ValueError("power needs at least 2 values in each arm")
    df = n_x + n_y - 2
    nc = abs(effect) * math.sqrt(n_x * n_y / (n_x + n_y))
    critical = float(special.stdtrit(df, 1.0 - alpha / 2.0))
    return float(1.0 - special.nctdtr(df, nc, critical) + special.nctdtr(df, nc, -critical))


@lru_cache(maxsize=256)  # it depends on the sizes only, and the same sizes recur
def minimum_detectable_effect(n_x: int, n_y: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest standardised difference detected with probability ``power``."""
    if not alpha < power < 1.0:
        raise ValueError("power must lie between alpha and 1")
    upper = 1.0
    while t_test_power(upper, n_x, n_y, alpha) < power:
        upper *= 2.0
    return float(
        optimize.brentq(lambda d: t_test_power(d, n_x, n_y, alpha) - power, 0.0, upper, xtol=1e-6)
    )


def sample_size_per_arm(effect: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """The smallest equal n per arm that detects ``effect`` (Cohen's d) with
    probability ``power``; ``None`` when the effect is 0 or needs more than
    :data:`MAX_N_PER_ARM` per arm."""
    if effect == 0.0 or not math.isfinite(effect):
        return None
    # The normal approximation never asks for more than the t-test needs, and
    # it is off by only a few at small n, so a short walk from it is exact.
    z = special.ndtri(1.0 - alpha / 2.0) + special.ndtri(power)
    n = max(2, math.ceil(2.0 * (z / abs(effect)) ** 2))
    if n > MAX_N_PER_ARM:
        return None
    while t_test_power(effect, n, n, alpha) < power:
        n += 1
        if n > MAX_N_PER_ARM:
            return None
    while n > 2 and t_test_power(effect, n - 1, n - 1, alpha) >= power:
        n -= 1
    return n
