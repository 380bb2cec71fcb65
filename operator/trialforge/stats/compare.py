"""Candidates against a baseline: the table a decision rests on (issue 8, item 3).

For each candidate: the difference of means (candidate - baseline, in the
metric's units) with a Welch and a bootstrap interval, a p-value, Hedges' g,
the Holm-adjusted p across all candidates, and a verdict.  With more than two
arms, an omnibus test across all of them as well.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from trialforge.stats.multiple import holm
from trialforge.stats.omnibus import OmnibusResult, omnibus_test
from trialforge.stats.power import minimum_detectable_effect, sample_size_per_arm
from trialforge.stats.two_sample import (
    bootstrap_interval,
    hedges_g,
    mann_whitney,
    min_rank_test_p,
    non_normal_reason,
    pooled_sd,
    welch,
)

__all__ = ["DIRECTIONS", "TESTS", "VERDICTS", "Comparison", "ComparisonReport", "compare_arms"]

DIRECTIONS = ("maximize", "minimize")
TESTS = ("welch", "mannwhitney", "auto")
VERDICTS = ("better", "worse", "inconclusive")
POWER = 0.8


@dataclass(frozen=True, slots=True)
class Comparison:
    """One candidate against the baseline.  Statistics an arm's size does not
    allow are ``None``; ``note`` says why, in words for people."""

    candidate: str
    baseline: str
    n_candidate: int
    n_baseline: int
    mean_candidate: float | None
    mean_baseline: float | None
    difference: float | None  # candidate - baseline
    ci_low: float | None  # Welch interval at 1 - alpha
    ci_high: float | None
    bootstrap_low: float | None
    bootstrap_high: float | None
    p_value: float | None
    p_adjusted: float | None  # Holm, across the candidates that could be tested
    test: str | None  # "welch" | "mannwhitney"
    effect_size: float | None  # Hedges' g, candidate - baseline
    verdict: str  # "better" | "worse" | "inconclusive", by the objective's direction
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ComparisonReport:
    baseline: str
    direction: str
    alpha: float
    test: str  # as asked; each comparison says which test it used
    comparisons: tuple[Comparison, ...]
    omnibus: OmnibusResult | None  # with more than two testable arms

    @property
    def verdicts(self) -> dict[str, str]:
        return {c.candidate: c.verdict for c in self.comparisons}

    def to_dict(self) -> dict[str, object]:
        return {
            "baseline": self.baseline,
            "direction": self.direction,
            "alpha": self.alpha,
            "test": self.test,
            "comparisons": [c.to_dict() for c in self.comparisons],
            "omnibus": None if self.omnibus is None else self.omnibus.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class _Tested:
    """A comparison before the Holm step, which needs every candidate's p."""

    p_value: float
    test: str
    direction: int  # sign the test found: +1 candidate higher, -1 lower, 0 none
    notes: tuple[str, ...]


def compare_arms(
    arms: Mapping[str, Sequence[float]],
    baseline: str,
    direction: str,
    alpha: float = 0.05,
    test: str = "welch",
    seed: int | None = 0,
    bootstrap_resamples: int = 9999,
) -> ComparisonReport:
    """Compare every arm of ``arms`` (name → objective values of its repeats)
    with ``baseline``.

    ``test``: ``welch``, ``mannwhitney``, or ``auto`` — Mann-Whitney U when
    either arm looks non-normal by :func:`non_normal_reason` *and* the sizes let
    a rank test reach ``alpha`` at all, Welch otherwise.  The verdict is
    ``better``/``worse`` when the Holm-adjusted p is below ``alpha``, by the sign
    the test found and the ``direction``; otherwise ``inconclusive``.

    The bootstrap interval of each candidate is drawn from a generator seeded
    by ``seed`` and the candidate's name, so it does not change when other
    candidates come or go.  ``bootstrap_resamples=0`` skips it.
    """
    _check(arms, baseline, direction, alpha, test)
    samples = {name: np.asarray(v, dtype=float) for name, v in arms.items()}
    base = samples[baseline]
    candidates = [name for name in samples if name != baseline]
    non_normal = {
        name: reason
        for name, values in samples.items()
        if test == "auto" and (reason := non_normal_reason(name, values)) is not None
    }

    tested: dict[str, _Tested] = {}
    for name in candidates:
        if len(samples[name]) >= 2 and len(base) >= 2:
            tested[name] = _test(name, samples[name], baseline, base, test, non_normal, alpha)
    adjusted = dict(zip(tested, holm([t.p_value for t in tested.values()]), strict=True))

    comparisons = tuple(
        _compare(
            name,
            samples[name],
            baseline,
            base,
            direction,
            alpha,
            tested.get(name),
            None if name not in adjusted else float(adjusted[name]),
            _rng(seed, name),
            bootstrap_resamples,
        )
        for name in candidates
    )
    return ComparisonReport(
        baseline, direction, alpha, test, comparisons, _omnibus(samples, test, non_normal)
    )


def _check(
    arms: Mapping[str, Sequence[float]], baseline: str, direction: str, alpha: float, test: str
) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, not {test!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1, not {alpha!r}")
    if baseline not in arms:
        raise ValueError(f"baseline {baseline!r} is not one of the arms {sorted(arms)}")
    for name, values in arms.items():
        if not np.all(np.isfinite(np.asarray(values, dtype=float))):
            # A NaN objective fails its trial upstream; one here is a bug to surface.
            raise ValueError(f"arm {name!r} has a non-finite value")


def _rng(seed: int | None, name: str) -> np.random.Generator:
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _test(
    name: str,
    values: np.ndarray,
    baseline: str,
    base: np.ndarray,
    test: str,
    non_normal: Mapping[str, str],
    alpha: float,
) -> _Tested:
    notes: list[str] = []
    use = test
    if test == "auto":
        reasons = [non_normal[arm] for arm in (name, baseline) if arm in non_normal]
        use = "welch"
        if reasons and min_rank_test_p(len(values), len(base)) < alpha:
            use = "mannwhitney"
            notes.append("Mann-Whitney U because " + " and ".join(reasons))
        elif reasons:
            notes.append(
                "Welch despite " + " and ".join(reasons) + ": a rank test cannot reach "
                f"alpha={alpha:g} with n={len(values)} and {len(base)}"
            )
    if use == "mannwhitney":
        if test == "mannwhitney" and min_rank_test_p(len(values), len(base)) >= alpha:
            notes.append(
                f"Mann-Whitney U cannot reach alpha={alpha:g} with n={len(values)} and {len(base)}"
            )
        rank = mann_whitney(values, base)
        return _Tested(rank.p_value, use, rank.direction, tuple(notes))
    result = welch(values, base)
    if result.standard_error == 0.0:
        notes.append(
            "no variation within either arm, so the difference is exact"
            " (does the trainer use TRIALFORGE_SEED?)"
        )
    return _Tested(result.p_value, use, int(np.sign(result.difference)), tuple(notes))


def _compare(
    name: str,
    values: np.ndarray,
    baseline: str,
    base: np.ndarray,
    direction: str,
    alpha: float,
    tested: _Tested | None,
    p_adjusted: float | None,
    rng: np.random.Generator,
    bootstrap_resamples: int,
) -> Comparison:
    n_c, n_b = len(values), len(base)
    mean_c = float(values.mean()) if n_c else None
    mean_b = float(base.mean()) if n_b else None
    difference = None if mean_c is None or mean_b is None else mean_c - mean_b
    if tested is None or p_adjusted is None:
        too_few = [
            f"'{arm}' has {n} value{'' if n == 1 else 's'}"
            for arm, n in ((name, n_c), (baseline, n_b))
            if n < 2
        ]
        note = " and ".join(too_few) + "; a comparison needs at least 2 per arm"
        return Comparison(
            name, baseline, n_c, n_b, mean_c, mean_b, difference,
            None, None, None, None, None, None, None, None, "inconclusive", note,
        )  # fmt: skip
    confidence = 1.0 - alpha
    interval = welch(values, base, confidence)
    boot = (
        bootstrap_interval(values, base, rng, confidence, bootstrap_resamples)
        if bootstrap_resamples > 0
        else None
    )
    verdict = _verdict(tested.direction, p_adjusted, alpha, direction)
    notes = list(tested.notes)
    if verdict == "inconclusive":
        notes.append(_power_note(values, base, alpha, tested.p_value, p_adjusted))
    return Comparison(
        name, baseline, n_c, n_b, mean_c, mean_b, interval.difference,
        interval.ci_low, interval.ci_high,
        None if boot is None else boot[0], None if boot is None else boot[1],
        tested.p_value, p_adjusted, tested.test, hedges_g(values, base), verdict,
        "; ".join(n for n in notes if n),
    )  # fmt: skip


def _verdict(found: int, p_adjusted: float, alpha: float, direction: str) -> str:
    if p_adjusted >= alpha or found == 0:
        return "inconclusive"
    improves = found > 0 if direction == "maximize" else found < 0
    return "better" if improves else "worse"


def _power_note(
    values: np.ndarray, base: np.ndarray, alpha: float, p: float, p_adjusted: float
) -> str:
    """Why an inconclusive result is inconclusive, in terms of sample size.

    Power is that of the two-sided t-test at ``alpha`` (noncentral t, pooled
    SD), also when Mann-Whitney was used: a planning figure, not an exact one.
    """
    n_c, n_b = len(values), len(base)
    sd = pooled_sd(values, base)
    difference = abs(float(values.mean() - base.mean()))
    if sd == 0.0:
        return "" if difference else "every value in both arms is the same"
    sizes = f"n={n_c} per arm" if n_c == n_b else f"n={n_c} and {n_b}"
    mde = minimum_detectable_effect(n_c, n_b, alpha, POWER) * sd
    needed = sample_size_per_arm(difference / sd, alpha, POWER)
    if needed is None:
        return (
            f"the observed difference {difference:.3g} is too small to detect with any "
            f"practical n; the smallest difference {sizes} detects at "
            f"{POWER:.0%} power is {mde:.3g}"
        )
    # Unequal arms detect like equal ones of the harmonic mean size.
    if needed > 2 * n_c * n_b / (n_c + n_b):
        return (
            f"{sizes} is too small to detect a difference of {difference:.3g} "
            f"(needs ~{needed} per arm at {POWER:.0%} power; "
            f"the smallest detectable now is {mde:.3g})"
        )
    if p < alpha <= p_adjusted:
        return f"p={p:.3g} is not significant after Holm correction across candidates"
    return (
        f"{sizes} would detect a true difference of {difference:.3g} with {POWER:.0%} "
        f"power, yet p={p:.3g}: the data do not show one"
    )


def _omnibus(
    samples: Mapping[str, np.ndarray], test: str, non_normal: Mapping[str, str]
) -> OmnibusResult | None:
    testable = {name: v for name, v in samples.items() if len(v) >= 2}
    if len(samples) <= 2 or len(testable) < 3:
        return None
    method = "welch"
    if test == "mannwhitney" or (test == "auto" and non_normal):
        method = "kruskal"
    result = omnibus_test(testable, method)
    if len(testable) < len(samples):
        left_out = ", ".join(repr(n) for n in samples if n not in testable)
        note = "; ".join(filter(None, [result.note, f"left out (< 2 values): {left_out}"]))
        result = OmnibusResult(
            result.method, result.arms, result.statistic, result.p_value,
            result.df_between, result.df_within, note,
        )  # fmt: skip
    return result
