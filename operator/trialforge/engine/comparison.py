"""The experiment's comparison table: candidates against the baseline, as plain dicts.

The planner gathers, per configuration, the objective values of its finished
runs and how many of them failed; this module runs :mod:`trialforge.stats` on
them and returns rows fit for ``ExperimentStatus.comparison`` (camelCase keys,
JSON numbers only: a value that is not finite is ``None``).

Rows, in order:

* ``role: baseline`` — the reference configuration: n, mean, sd, failures;
  also the metric, direction, alpha, test and where the data come from
  (``source``: ``arms``, ``confirm`` or ``search``).
* ``role: candidate`` — one per other configuration: the difference of means
  (candidate - baseline) with its Welch interval and (once no compared run is
  pending) its bootstrap interval, the p-value, the Holm-adjusted p across all
  candidates, Hedges' g, the verdict
  (``better`` / ``worse`` / ``inconclusive`` by the objective's direction) and
  a note (too few runs, the n needed, a test switch, a selection bias).
* ``role: omnibus`` — with more than two configurations: (Welch's) ANOVA or
  Kruskal-Wallis across all of them.
* ``role: passFail`` — when some runs failed: chi-squared (or Fisher's exact)
  test of the failure rates across configurations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trialforge.stats import compare_arms, pass_fail_test

# Tests as the spec names them -> as trialforge.stats names them.
TEST_NAMES = {"welch": "welch", "mann-whitney": "mannwhitney", "auto": "auto"}
# A search can try thousands of configurations; the status keeps the best of them.
MAX_CANDIDATE_ROWS = 20


@dataclass(frozen=True)
class Group:
    """One configuration's runs: the objective values of those that succeeded."""

    name: str
    parameters: Mapping[str, Any]
    values: tuple[float, ...] = ()
    failed: int = 0
    pending: int = 0  # runs not ended yet (the rows are interim while any is)
    trials: tuple[str, ...] = field(default_factory=tuple)


def _num(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _num(v) for k, v in row.items() if v is not None and v != ""}


def _summary(group: Group) -> dict[str, Any]:
    values = np.asarray(group.values, dtype=float)
    return {
        "arm": group.name,
        "n": len(values),
        "mean": float(values.mean()) if len(values) else None,
        "sd": float(values.std(ddof=1)) if len(values) >= 2 else None,
        "failed": group.failed,
        "parameters": dict(group.parameters),
    }


def comparison_rows(
    groups: Sequence[Group],
    baseline: str,
    metric: str,
    direction: str,
    *,
    alpha: float = 0.05,
    test: str = "welch",
    source: str = "arms",
    seed: int = 0,
    selection_note: str = "",
    bootstrap_resamples: int = 9999,
) -> list[dict[str, Any]]:
    """The comparison of every group with ``baseline``, as status rows."""
    by_name = {g.name: g for g in groups}
    base = by_name[baseline]
    interim = any(g.pending for g in groups)
    report = compare_arms(
        {g.name: list(g.values) for g in groups},
        baseline,
        direction,
        alpha=alpha,
        test=TEST_NAMES[test],
        seed=seed,
        bootstrap_resamples=bootstrap_resamples,
    )
    head = _summary(base) | {
        "role": "baseline",
        "metric": metric,
        "direction": direction,
        "alpha": alpha,
        "test": test,
        "source": source,
        "trials": list(base.trials),
    }
    if interim:
        head["interim"] = True
    rows = [_clean(head)]
    candidates = []
    for c in report.comparisons:
        group = by_name[c.candidate]
        note = "; ".join(n for n in (c.note, selection_note if c.n_candidate else "") if n)
        row = _summary(group) | {
            "role": "candidate",
            "trials": list(group.trials),
            "difference": c.difference,
            "ciLow": c.ci_low,
            "ciHigh": c.ci_high,
            "bootstrapLow": c.bootstrap_low,
            "bootstrapHigh": c.bootstrap_high,
            "pValue": c.p_value,
            "pAdjusted": c.p_adjusted,
            "test": c.test,
            "hedgesG": c.effect_size,
            "verdict": c.verdict,
            "note": note,
        }
        if interim:
            row["interim"] = True
        candidates.append(_clean(row))
    if len(candidates) > MAX_CANDIDATE_ROWS:
        sign = 1.0 if direction == "maximize" else -1.0
        candidates.sort(key=lambda r: -sign * r["mean"] if r.get("mean") is not None else math.inf)
        candidates = candidates[:MAX_CANDIDATE_ROWS]
    rows.extend(candidates)
    if report.omnibus is not None:
        o = report.omnibus
        rows.append(
            _clean(
                {
                    "role": "omnibus",
                    "test": o.method,
                    "statistic": o.statistic,
                    "pValue": o.p_value,
                    "dfBetween": o.df_between,
                    "dfWithin": o.df_within,
                    "arms": list(o.arms),
                    "note": o.note,
                }
            )
        )
    if any(g.failed for g in groups):
        outcome = pass_fail_test({g.name: (len(g.values), g.failed) for g in groups})
        rows.append(
            _clean(
                {
                    "role": "passFail",
                    "test": outcome.method,
                    "statistic": outcome.statistic,
                    "pValue": outcome.p_value,
                    "dof": outcome.dof,
                    "passRates": {k: float(v) for k, v in outcome.pass_rates.items()},
                    "note": outcome.note,
                }
            )
        )
    return rows


def verdicts(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Candidate name -> verdict, from comparison rows."""
    return {r["arm"]: r["verdict"] for r in rows if r.get("role") == "candidate"}
