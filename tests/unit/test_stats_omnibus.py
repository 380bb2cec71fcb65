"""stats/omnibus.py: ANOVA, Welch's ANOVA, Kruskal-Wallis and pass/fail tests, against SciPy."""

from __future__ import annotations

import inspect

import pytest
from scipy import stats

from trialforge.stats import (
    omnibus_test,
    pass_fail_test,
)

A = [0.812, 0.825, 0.809, 0.831, 0.818, 0.822]


B = [0.801, 0.795, 0.812, 0.790, 0.806, 0.799, 0.803, 0.815]


C = [0.74, 0.91, 0.66, 0.88]  # few and spread out


def test_anova_and_kruskal_agree_with_scipy() -> None:
    arms = {"a": A, "b": B, "c": C}
    anova = omnibus_test(arms, "anova")
    reference = stats.f_oneway(A, B, C)
    assert (anova.statistic, anova.p_value) == pytest.approx(
        (reference.statistic, reference.pvalue)
    )
    assert (anova.df_between, anova.df_within) == (2, len(A) + len(B) + len(C) - 3)
    kruskal = omnibus_test(arms, "kruskal")
    reference = stats.kruskal(A, B, C)
    assert (kruskal.statistic, kruskal.p_value) == pytest.approx(
        (reference.statistic, reference.pvalue)
    )


@pytest.mark.skipif(
    "equal_var" not in inspect.signature(stats.f_oneway).parameters,
    reason="SciPy < 1.15 has no Welch ANOVA to compare with",
)
def test_welch_anova_agrees_with_scipy() -> None:
    result = omnibus_test({"a": A, "b": B, "c": C}, "welch")
    reference = stats.f_oneway(A, B, C, equal_var=False)
    assert (result.statistic, result.p_value) == pytest.approx(
        (reference.statistic, reference.pvalue), rel=1e-9
    )


def test_welch_anova_falls_back_when_an_arm_has_no_variance() -> None:
    result = omnibus_test({"a": [1.0, 1.0, 1.0], "b": B, "c": A}, "welch")
    assert result.method == "anova" and "undefined" in result.note
    assert omnibus_test({"a": [1.0, 1.0], "b": [1.0, 1.0]}, "kruskal").p_value == 1.0
    with pytest.raises(ValueError, match="unknown omnibus method"):
        omnibus_test({"a": A, "b": B}, "friedman")


def test_pass_fail_chi_squared_agrees_with_scipy() -> None:
    counts = {"a": (30, 10), "b": (22, 18), "c": (35, 5)}
    result = pass_fail_test(counts)
    reference = stats.chi2_contingency([[30, 10], [22, 18], [35, 5]])
    assert result.method == "chi2"
    assert (result.statistic, result.p_value, result.dof) == pytest.approx(
        (reference.statistic, reference.pvalue, reference.dof)
    )
    assert result.pass_rates == pytest.approx({"a": 0.75, "b": 0.55, "c": 0.875})


def test_pass_fail_2x2_uses_yates_when_counts_are_large_and_fisher_when_small() -> None:
    large = pass_fail_test({"a": (40, 20), "b": (25, 35)})
    assert large.method == "chi2"
    assert large.p_value == pytest.approx(stats.chi2_contingency([[40, 20], [25, 35]]).pvalue)
    small = pass_fail_test({"a": (5, 0), "b": (1, 4)})
    assert small.method == "fisher"
    assert small.p_value == pytest.approx(stats.fisher_exact([[5, 0], [1, 4]]).pvalue)


def test_pass_fail_edge_cases() -> None:
    same = pass_fail_test({"a": (5, 0), "b": (7, 0)})
    assert (same.method, same.p_value) == ("none", 1.0)
    dropped = pass_fail_test({"a": (5, 1), "b": (0, 0), "c": (1, 5)})
    assert "'b' has no outcomes" in dropped.note and "b" not in dropped.pass_rates
    with pytest.raises(ValueError, match="'a'"):
        pass_fail_test({"a": (-1, 2), "b": (1, 1)})
