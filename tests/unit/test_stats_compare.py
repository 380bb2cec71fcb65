"""Statistics for comparing configurations (issue 8, item 3).

Two kinds of test: agreement with SciPy's reference functions (or a hand
computation) on fixed data, and simulations with a known truth checking that
the error rates are what the methods promise.  Simulations use fixed seeds, so
they are deterministic; the bounds are wide enough that another seed would
pass too.
"""

from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from trialforge.stats import (
    compare_arms,
    hedges_g,
    holm,
    mann_whitney,
    minimum_detectable_effect,
    non_normal_reason,
    omnibus_test,
    pass_fail_test,
    sample_size_per_arm,
    t_test_power,
    welch,
)
from trialforge.stats.two_sample import bootstrap_interval, min_rank_test_p

A = [0.812, 0.825, 0.809, 0.831, 0.818, 0.822]
B = [0.801, 0.795, 0.812, 0.790, 0.806, 0.799, 0.803, 0.815]
C = [0.74, 0.91, 0.66, 0.88]  # few and spread out

# --- Welch: interval and p ------------------------------------------------------


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


# --- Mann-Whitney, Hedges' g, bootstrap ------------------------------------------


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


# --- Holm -----------------------------------------------------------------------


def test_holm_hand_worked_example() -> None:
    # Sorted: 0.005x4 = 0.02, 0.01x3 = 0.03, 0.03x2 = 0.06, 0.04x1 = 0.04 -> 0.06 (running max).
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == pytest.approx([0.02])
    assert holm([]).shape == (0,)


def _holm_rejections(p: list[float], alpha: float) -> set[int]:
    """Holm's procedure as written in textbooks: step down until one fails."""
    rejected: set[int] = set()
    for rank, index in enumerate(sorted(range(len(p)), key=lambda i: p[i])):
        if p[index] > alpha / (len(p) - rank):
            break
        rejected.add(index)
    return rejected


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


# --- omnibus and pass/fail -------------------------------------------------------


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


# --- power -----------------------------------------------------------------------


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


# --- compare_arms ------------------------------------------------------------------


def test_compare_arms_fields_agree_with_the_pieces() -> None:
    report = compare_arms({"base": B, "a": A}, "base", "maximize", bootstrap_resamples=500)
    (c,) = report.comparisons
    reference = welch(A, B)
    assert (c.candidate, c.baseline, c.n_candidate, c.n_baseline) == ("a", "base", 6, 8)
    assert c.difference == pytest.approx(np.mean(A) - np.mean(B))
    assert (c.ci_low, c.ci_high) == pytest.approx((reference.ci_low, reference.ci_high))
    assert c.p_value == pytest.approx(stats.ttest_ind(A, B, equal_var=False).pvalue)
    assert c.p_adjusted == c.p_value  # one candidate: Holm changes nothing
    assert c.effect_size == pytest.approx(hedges_g(A, B))
    assert c.bootstrap_low is not None and c.bootstrap_high is not None
    assert c.bootstrap_low < c.difference < c.bootstrap_high
    assert (c.test, c.verdict) == ("welch", "better")
    assert report.omnibus is None  # two arms: the comparison is the whole story


@pytest.mark.parametrize(
    ("direction", "higher", "lower"),
    [("maximize", "better", "worse"), ("minimize", "worse", "better")],
)
def test_verdict_follows_the_direction(direction: str, higher: str, lower: str) -> None:
    arms = {"base": B, "up": [x + 0.05 for x in B], "down": [x - 0.05 for x in B]}
    report = compare_arms(arms, "base", direction, bootstrap_resamples=0)
    assert report.verdicts == {"up": higher, "down": lower}


def test_holm_adjusts_across_candidates_in_the_report() -> None:
    arms = {"base": B, "a": A, "c": C, "same": B[::-1]}
    report = compare_arms(arms, "base", "maximize", bootstrap_resamples=0)
    raw = [c.p_value for c in report.comparisons]
    assert [c.p_adjusted for c in report.comparisons] == pytest.approx(list(holm(raw)))


def test_too_few_values_are_inconclusive_with_a_reason() -> None:
    report = compare_arms({"base": B, "one": [0.9], "none": [], "ok": A}, "base", "maximize")
    one, none, ok = report.comparisons
    assert (one.verdict, one.p_value, one.mean_candidate) == ("inconclusive", None, 0.9)
    assert "'one' has 1 value" in one.note and "at least 2" in one.note
    assert none.mean_candidate is None and "'none' has 0 values" in none.note
    assert ok.p_adjusted == ok.p_value  # untestable candidates are not in the family
    assert report.omnibus is None  # only two arms can be tested
    lonely = compare_arms({"base": [1.0], "a": A}, "base", "maximize")
    assert "'base' has 1 value" in lonely.comparisons[0].note


def test_small_n_note_says_how_many_are_needed() -> None:
    base, a = [0.900, 0.905, 0.895], [0.912, 0.920, 0.904]
    (c,) = compare_arms({"base": base, "a": a}, "base", "maximize").comparisons
    assert c.verdict == "inconclusive"
    pooled_sd = math.sqrt((np.var(base, ddof=1) + np.var(a, ddof=1)) / 2)  # equal n
    d = abs(c.difference or 0) / pooled_sd
    needed = sample_size_per_arm(d)
    assert needed is not None and needed > 3
    assert c.note.startswith("n=3 per arm is too small to detect a difference of 0.012 ")
    assert f"needs ~{needed} per arm at 80% power" in c.note


def test_identical_arms_without_noise_get_an_exact_verdict_and_a_hint() -> None:
    report = compare_arms({"base": [0.8, 0.8], "a": [0.9, 0.9, 0.9]}, "base", "maximize")
    (c,) = report.comparisons
    assert (c.verdict, c.p_value, c.effect_size) == ("better", 0.0, None)
    assert "TRIALFORGE_SEED" in c.note


def test_auto_switches_to_mann_whitney_on_an_outlier_when_ranks_can_decide() -> None:
    crashed = [0.91, 0.92, 0.93, 0.92, 0.91, 0.93, 0.0]  # one seed diverged
    assert non_normal_reason("a", crashed) is not None
    report = compare_arms({"base": B, "a": crashed}, "base", "maximize", test="auto")
    (c,) = report.comparisons
    assert c.test == "mannwhitney" and "beyond 3xIQR" in c.note
    assert c.p_value == pytest.approx(mann_whitney(crashed, B).p_value)
    # The mean is dragged below the baseline, but the ranks say higher.
    assert c.difference is not None and c.difference < 0 and c.verdict == "better"
    plain = compare_arms({"base": B, "a": A}, "base", "maximize", test="auto")
    assert plain.comparisons[0].test == "welch"


def test_auto_keeps_welch_when_a_rank_test_could_never_reach_alpha() -> None:
    report = compare_arms(
        {"base": [0.8, 0.81], "a": [0.9, 0.91, 0.92, 0.9, 0.91, 0.3]},
        "base",
        "maximize",
        test="auto",
    )
    (c,) = report.comparisons
    assert c.test == "welch" and "cannot reach alpha" in c.note
    asked = compare_arms({"base": A[:3], "a": B[:3]}, "base", "maximize", test="mannwhitney")
    assert "cannot reach alpha=0.05 with n=3 and 3" in asked.comparisons[0].note


def test_omnibus_across_more_than_two_arms() -> None:
    arms = {"base": B, "a": A, "c": C}
    assert compare_arms(arms, "base", "maximize").omnibus == omnibus_test(arms, "welch")
    ranked = compare_arms(arms, "base", "maximize", test="mannwhitney").omnibus
    assert ranked is not None and ranked.method == "kruskal"


def test_bootstrap_is_seeded_per_candidate() -> None:
    two = compare_arms({"base": B, "a": A}, "base", "maximize", seed=7, bootstrap_resamples=500)
    three = compare_arms(
        {"base": B, "c": C, "a": A}, "base", "maximize", seed=7, bootstrap_resamples=500
    )
    other = compare_arms({"base": B, "a": A}, "base", "maximize", seed=8, bootstrap_resamples=500)
    a2, a3, a8 = two.comparisons[0], three.comparisons[1], other.comparisons[0]
    assert (a2.bootstrap_low, a2.bootstrap_high) == (a3.bootstrap_low, a3.bootstrap_high)
    assert (a2.bootstrap_low, a2.bootstrap_high) != (a8.bootstrap_low, a8.bootstrap_high)


def test_report_to_dict_is_strict_json() -> None:
    arms = {"base": B, "a": A, "c": C, "one": [1.0], "flat": [0.8, 0.8]}
    report = compare_arms(arms, "base", "minimize", bootstrap_resamples=200)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert [c["candidate"] for c in data["comparisons"]] == ["a", "c", "one", "flat"]
    assert data["omnibus"]["arms"] == ["base", "a", "c", "flat"]
    assert "left out" in data["omnibus"]["note"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"direction": "up"}, "direction"),
        ({"test": "ks"}, "test must be"),
        ({"alpha": 0.0}, "alpha"),
        ({"baseline": "nope"}, "baseline 'nope'"),
        ({"arms": {"base": B, "a": [0.1, math.nan]}}, "arm 'a' has a non-finite"),
    ],
)
def test_compare_arms_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"arms": {"base": B, "a": A}, "baseline": "base"}
    arguments |= {"direction": "maximize"} | kwargs
    with pytest.raises(ValueError, match=message):
        compare_arms(**arguments)  # type: ignore[arg-type]


# --- simulations with a known truth ------------------------------------------------

SIMS = 1000


def _decided(verdicts: list[str]) -> float:
    return float(np.mean([v != "inconclusive" for v in verdicts]))


@pytest.mark.parametrize("test", ["welch", "mannwhitney", "auto"])
def test_false_positive_rate_under_the_null_is_alpha(test: str) -> None:
    data = np.random.default_rng(11).normal(0.8, 0.02, size=(SIMS, 2, 10))
    verdicts = [
        compare_arms({"base": b, "c": c}, "base", "maximize", test=test, bootstrap_resamples=0)
        .comparisons[0]
        .verdict
        for b, c in data
    ]
    assert 0.03 <= _decided(verdicts) <= 0.07


@pytest.mark.parametrize("test", ["welch", "auto"])
def test_power_at_a_large_effect(test: str) -> None:
    # d = 1.5 with n = 20 per arm: the t-test's power is about 0.999.
    rng = np.random.default_rng(12)
    verdicts = [
        compare_arms(
            {"base": rng.normal(0, 1, 20), "c": rng.normal(1.5, 1, 20)},
            "base",
            "maximize",
            test=test,
            bootstrap_resamples=0,
        )
        .comparisons[0]
        .verdict
        for _ in range(300)
    ]
    assert verdicts.count("better") / len(verdicts) > 0.8
    assert "worse" not in verdicts


def test_power_at_a_large_effect_when_minimizing() -> None:
    rng = np.random.default_rng(13)
    verdicts = [
        compare_arms(
            {"base": rng.normal(0.5, 0.1, 20), "c": rng.normal(0.35, 0.1, 20)},
            "base",
            "minimize",
            bootstrap_resamples=0,
        )
        .comparisons[0]
        .verdict
        for _ in range(300)
    ]
    assert verdicts.count("better") / len(verdicts) > 0.8


def test_holm_keeps_the_family_wise_error_rate() -> None:
    data = np.random.default_rng(14).normal(0, 1, size=(SIMS, 6, 10))
    any_adjusted, any_raw = 0, 0
    for sim in data:
        report = compare_arms(
            {f"arm{i}": values for i, values in enumerate(sim)},
            "arm0",
            "maximize",
            bootstrap_resamples=0,
        )
        any_adjusted += any(c.verdict != "inconclusive" for c in report.comparisons)
        any_raw += any((c.p_value or 1.0) < 0.05 for c in report.comparisons)
    assert any_adjusted / SIMS <= 0.07
    # Without the correction five tests would err far more often: the test has teeth.
    assert any_raw / SIMS > 0.12


def test_welch_interval_covers_the_true_difference() -> None:
    rng = np.random.default_rng(15)
    covered = 0
    for _ in range(2000):
        result = welch(rng.normal(1.0, 0.5, 6), rng.normal(0.7, 0.1, 15), 0.95)
        covered += result.ci_low <= 0.3 <= result.ci_high
    assert 0.93 <= covered / 2000 <= 0.97


def test_a_b_n_verdicts_with_known_means() -> None:
    rng = np.random.default_rng(16)
    true_means = {"base": 0.80, "same": 0.80, "worse": 0.76, "better": 0.85}
    arms = {name: rng.normal(mean, 0.02, 12) for name, mean in true_means.items()}
    report = compare_arms(arms, "base", "maximize")
    assert report.verdicts == {"same": "inconclusive", "worse": "worse", "better": "better"}
    assert report.omnibus is not None and report.omnibus.p_value < 0.05
