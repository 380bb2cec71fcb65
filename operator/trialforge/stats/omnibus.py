"""Tests across all arms at once: ANOVA and friends, and pass/fail counts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

__all__ = ["OMNIBUS_METHODS", "OmnibusResult", "OutcomeTest", "omnibus_test", "pass_fail_test"]

OMNIBUS_METHODS = ("anova", "welch", "kruskal")
FISHER_BELOW_EXPECTED = 5.0  # the usual rule of thumb for the chi-squared approximation


@dataclass(frozen=True, slots=True)
class OmnibusResult:
    """Do the arms' means (or distributions, for Kruskal-Wallis) differ at all?"""

    method: str  # "anova" | "welch" | "kruskal"
    arms: tuple[str, ...]
    statistic: float | None
    p_value: float
    df_between: float | None = None
    df_within: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["arms"] = list(self.arms)
        return out


def omnibus_test(arms: Mapping[str, Sequence[float]], method: str = "welch") -> OmnibusResult:
    """One-way ANOVA (``anova``), Welch's ANOVA (``welch``) or Kruskal-Wallis.

    Needs at least two arms with at least 2 values each.  Welch's ANOVA is the
    default for the same reason Welch's t is: trials with different parameters
    rarely share a variance.  It is computed by hand (Welch 1951) so as not to
    need SciPy ≥ 1.15's ``f_oneway(equal_var=False)``; when an arm has no
    variance at all it is undefined and classic ANOVA is used instead.
    """
    if method not in OMNIBUS_METHODS:
        raise ValueError(f"unknown omnibus method {method!r}; use one of {OMNIBUS_METHODS}")
    samples = {name: np.asarray(v, dtype=float) for name, v in arms.items()}
    if len(samples) < 2 or any(len(v) < 2 for v in samples.values()):
        raise ValueError("an omnibus test needs at least 2 arms with at least 2 values each")
    names = tuple(samples)
    values = list(samples.values())
    pooled = np.concatenate(values)
    if np.ptp(pooled) == 0.0:
        return OmnibusResult(method, names, None, 1.0, note="every value is the same")
    if method == "kruskal":
        result = stats.kruskal(*values)
        return OmnibusResult(
            method, names, float(result.statistic), float(result.pvalue), len(values) - 1
        )
    if method == "welch":
        if all(v.var(ddof=1) > 0 for v in values):
            return _welch_anova(names, values)
        note = "an arm has no variance, so Welch's ANOVA is undefined; classic ANOVA used"
        return _classic_anova(names, values, note)
    return _classic_anova(names, values, "")


def _classic_anova(names: tuple[str, ...], values: list[np.ndarray], note: str) -> OmnibusResult:
    k, n = len(values), sum(len(v) for v in values)
    within = sum(float(((v - v.mean()) ** 2).sum()) for v in values)
    if within == 0.0:  # arms constant but different: the means differ exactly
        note = "; ".join(filter(None, [note, "no variance within any arm"]))
        return OmnibusResult("anova", names, None, 0.0, k - 1, n - k, note)
    result = stats.f_oneway(*values)
    return OmnibusResult(
        "anova", names, float(result.statistic), float(result.pvalue), k - 1, n - k, note
    )


def _welch_anova(names: tuple[str, ...], values: list[np.ndarray]) -> OmnibusResult:
    k = len(values)
    n = np.array([len(v) for v in values], dtype=float)
    means = np.array([v.mean() for v in values])
    weights = n / np.array([v.var(ddof=1) for v in values])
    grand = float((weights * means).sum() / weights.sum())
    between = float((weights * (means - grand) ** 2).sum()) / (k - 1)
    spread = float(((1 - weights / weights.sum()) ** 2 / (n - 1)).sum())
    statistic = between / (1 + 2 * (k - 2) / (k**2 - 1) * spread)
    df_within = (k**2 - 1) / (3 * spread)
    p = float(stats.f.sf(statistic, k - 1, df_within))
    return OmnibusResult("welch", names, statistic, p, k - 1, df_within)


@dataclass(frozen=True, slots=True)
class OutcomeTest:
    """Do the arms' pass rates differ?  (e.g. trials that reached a goal, or did not crash)"""

    method: str  # "chi2" | "fisher" | "none"
    statistic: float | None
    p_value: float
    dof: int | None
    pass_rates: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def pass_fail_test(counts: Mapping[str, tuple[int, int]]) -> OutcomeTest:
    """Chi-squared test of independence on (passed, failed) counts per arm.

    A 2x2 table with an expected count below 5 uses Fisher's exact test, where
    the chi-squared approximation is poor; larger tables keep chi-squared with
    a note.  The 2x2 chi-squared uses Yates' correction, as SciPy does by
    default.  Arms without any outcome are left out.
    """
    for name, pair in counts.items():
        if len(pair) != 2 or any(not isinstance(c, int) or c < 0 for c in pair):
            raise ValueError(f"arm {name!r}: counts must be (passed, failed) non-negative ints")
    kept = {name: pair for name, pair in counts.items() if sum(pair) > 0}
    notes = [f"'{name}' has no outcomes" for name in counts if name not in kept]
    rates = {name: p / (p + f) for name, (p, f) in kept.items()}
    if len(kept) < 2:
        notes.append("fewer than 2 arms have outcomes")
        return OutcomeTest("none", None, 1.0, None, rates, "; ".join(notes))
    table = np.array(list(kept.values()), dtype=np.int64)
    if np.any(table.sum(axis=0) == 0):  # every outcome a pass, or every one a fail
        notes.append("every outcome is the same")
        return OutcomeTest("none", None, 1.0, None, rates, "; ".join(notes))
    expected = stats.contingency.expected_freq(table)
    if table.shape == (2, 2) and expected.min() < FISHER_BELOW_EXPECTED:
        result = stats.fisher_exact(table)
        return OutcomeTest("fisher", None, float(result.pvalue), None, rates, "; ".join(notes))
    chi2 = stats.chi2_contingency(table)
    if expected.min() < FISHER_BELOW_EXPECTED:
        notes.append("some expected counts are below 5: the chi-squared p-value is rough")
    statistic = float(chi2.statistic)
    return OutcomeTest(
        "chi2",
        statistic if math.isfinite(statistic) else None,
        float(chi2.pvalue),
        int(chi2.dof),
        rates,
        "; ".join(notes),
    )
