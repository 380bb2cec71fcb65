"""stats/compare.py: comparing configurations with a baseline (issue 8, item 3).

Agreement with the pieces (stats/two_sample.py, multiple.py, omnibus.py) on
fixed data, and simulations with a known truth checking that the error rates
are what the methods promise.  Simulations use fixed seeds, so they are
deterministic; the bounds are wide enough that another seed would pass too.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from trialforge.stats import (
    compare_arms,
    hedges_g,
    holm,
    mann_whitney,
    non_normal_reason,
    omnibus_test,
    sample_size_per_arm,
    welch,
)

A = [0.812, 0.825, 0.809, 0.831, 0.818, 0.822]
B = [0.801, 0.795, 0.812, 0.790, 0.806, 0.799, 0.803, 0.815]
C = [0.74, 0.91, 0.66, 0.88]  # few and spread out

# --- Welch: interval and p ------------------------------------------------------


# --- Mann-Whitney, Hedges' g, bootstrap ------------------------------------------


# --- Holm -----------------------------------------------------------------------


# --- omnibus and pass/fail -------------------------------------------------------


# --- power -----------------------------------------------------------------------


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


def test_a_b_n_verdicts_with_known_means() -> None:
    rng = np.random.default_rng(16)
    true_means = {"base": 0.80, "same": 0.80, "worse": 0.76, "better": 0.85}
    arms = {name: rng.normal(mean, 0.02, 12) for name, mean in true_means.items()}
    report = compare_arms(arms, "base", "maximize")
    assert report.verdicts == {"same": "inconclusive", "worse": "worse", "better": "better"}
    assert report.omnibus is not None and report.omnibus.p_value < 0.05
