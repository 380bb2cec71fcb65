"""engine/comparison.py: the comparison rows' error rates and power, against a known truth."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from trialforge.engine.comparison import Group, comparison_rows


def _rows(values: dict[str, np.ndarray], test: str = "welch") -> list[dict[str, Any]]:
    groups = [Group(n, {}, tuple(float(x) for x in v)) for n, v in values.items()]
    return comparison_rows(groups, "base", "acc", "maximize", test=test, bootstrap_resamples=0)


@pytest.mark.parametrize("test", ["welch", "mann-whitney", "auto"])
def test_comparison_rows_false_positive_rate_is_alpha(test: str) -> None:
    rng = np.random.default_rng(21)
    decided = 0
    sims = 1000
    for _ in range(sims):
        rows = _rows({"base": rng.normal(0.8, 0.02, 8), "c": rng.normal(0.8, 0.02, 8)}, test)
        decided += rows[1]["verdict"] != "inconclusive"
    assert 0.03 <= decided / sims <= 0.07


def test_comparison_rows_power_at_a_large_effect() -> None:
    rng = np.random.default_rng(22)
    sims = 300
    better = sum(
        # d = 1.5 with n = 10 per arm: the t-test's power is about 0.93.
        _rows({"base": rng.normal(0.80, 0.02, 10), "c": rng.normal(0.83, 0.02, 10)})[1]["verdict"]
        == "better"
        for _ in range(sims)
    )
    assert better / sims > 0.8


def test_anova_across_arms_keeps_its_error_rate_under_the_null() -> None:
    rng = np.random.default_rng(23)
    sims = 1000
    rejected = 0
    for _ in range(sims):
        rows = _rows({n: rng.normal(0.8, 0.02, 6) for n in ("base", "a", "b", "c")})
        omnibus = next(r for r in rows if r["role"] == "omnibus")
        rejected += omnibus["pValue"] < 0.05
    assert 0.03 <= rejected / sims <= 0.07
