"""The experiment's comparison table: candidates against the baseline, as plain dicts.

Per configuration, the objective values of its finished runs and how many of
them failed (:class:`Comparer` gathers them from the planner's world: which
configurations the design compares, and on which runs); :func:`comparison_rows`
runs :mod:`trialforge.stats` on them and returns rows fit for
``ExperimentStatus.comparison`` (camelCase keys, JSON numbers only: a value
that is not finite is ``None``).

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
from typing import TYPE_CHECKING, Any

import numpy as np

from trialforge.api.experiment import ExperimentSpec
from trialforge.api.status import TrialPhase
from trialforge.engine.design import (
    BASELINE,
    ROLE_BASELINE,
    ROLE_CONFIRM,
    Slot,
    arm_runs,
    search_config,
    search_index_of,
)
from trialforge.engine.outcome import Config
from trialforge.engine.record import TrialRecord

if TYPE_CHECKING:
    from trialforge.stats import Comparison

# Tests as the spec names them -> as trialforge.stats names them.
TEST_NAMES = {"welch": "welch", "mann-whitney": "mannwhitney", "auto": "auto"}
# A search can try thousands of configurations; the status keeps the best of them.
MAX_CANDIDATE_ROWS = 20
# Trial names a row lists (``trialCount`` counts them all): a configuration can
# have up to 1,000 runs, and the rows must keep the status far below etcd's limit.
MAX_ROW_TRIALS = 50


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
    trials = list(group.trials)
    return {
        "arm": group.name,
        "n": len(values),
        "mean": float(values.mean()) if len(values) else None,
        "sd": float(values.std(ddof=1)) if len(values) >= 2 else None,
        "failed": group.failed,
        "parameters": dict(group.parameters),
        "trials": trials[:MAX_ROW_TRIALS],
        "trialCount": len(trials) if len(trials) > MAX_ROW_TRIALS else None,
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
    # Imported here: SciPy's statistics take seconds to import, and most
    # experiments (a search without a baseline) never compare.
    from trialforge.stats import compare_arms, pass_fail_test

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
    }
    if interim:
        head["interim"] = True
    rows = [_clean(head)]
    rows.extend(_candidate_rows(report.comparisons, by_name, direction, selection_note, interim))
    # Across thousands of configurations, the omnibus and pass/fail rows name only
    # those with a row (``armCount`` counts them all).
    shown = {r["arm"] for r in rows}
    many = len(groups) > len(shown)
    count = len(groups) if many else None
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
                    "arms": [a for a in o.arms if a in shown] if many else list(o.arms),
                    "armCount": count,
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
                    "passRates": {k: float(v) for k, v in outcome.pass_rates.items() if k in shown},
                    "armCount": count,
                    "note": outcome.note,
                }
            )
        )
    return rows


def _candidate_rows(
    comparisons: Sequence[Comparison],
    by_name: Mapping[str, Group],
    direction: str,
    selection_note: str,
    interim: bool,
) -> list[dict[str, Any]]:
    """A row per candidate (trialforge.stats comparisons), the best ones if too many."""
    candidates = []
    for c in comparisons:
        group = by_name[c.candidate]
        note = "; ".join(n for n in (c.note, selection_note if c.n_candidate else "") if n)
        row = _summary(group) | {
            "role": "candidate",
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
    return candidates


def verdicts(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Candidate name -> verdict, from comparison rows."""
    return {r["arm"]: r["verdict"] for r in rows if r.get("role") == "candidate"}


# -- what the planner compares ------------------------------------------------------


@dataclass(frozen=True)
class _Selection:
    """Which configurations an experiment compares, on which runs; the first is the reference."""

    source: str  # arms | confirm | search
    names: list[str]
    runs: dict[str, list[TrialRecord]]
    planned: int  # runs each configuration is to have
    note: str = ""  # a caveat for every candidate's row (a selection bias)


class Comparer:
    """An experiment's comparison rows, drawn again only when what they rest on changed."""

    def __init__(self) -> None:
        self._key: Any = None
        self._rows: list[dict[str, Any]] | None = None

    def rows(
        self,
        spec: ExperimentSpec,
        seed: int,
        by_slot: Mapping[Slot, TrialRecord],
        outcome: Mapping[int, TrialPhase | None],
        configs: Mapping[int, Config],
        search_end: tuple[str, str] | None,
        top: list[str],
    ) -> list[dict[str, Any]] | None:
        """Candidates against the reference; None when the experiment compares nothing.

        ``by_slot`` holds every run but the search's, whose runs are in
        ``configs``; ``outcome`` is each trial index's final phase, ``top`` the
        confirmation's configurations once the search ended.
        """
        chosen = _select(spec, by_slot, configs, top)
        if chosen is None:
            return None
        groups = _groups(spec, chosen, outcome, configs, search_end)
        reference = chosen.names[0]
        key = (chosen.source, reference, tuple((g.name, g.values, g.failed, g.pending)
               for g in groups), spec.comparison.test, spec.comparison.alpha)  # fmt: skip
        if key != self._key:
            objective = spec.all_objectives[0]
            self._rows = comparison_rows(
                groups,
                reference,
                objective.metric,
                objective.direction,
                alpha=spec.comparison.alpha,
                test=spec.comparison.test,
                source=chosen.source,
                seed=seed,
                selection_note=chosen.note,
                # The bootstrap costs ~10 ms a candidate: drawn once the runs ended,
                # not at every trial's end on the way.
                bootstrap_resamples=0 if any(g.pending for g in groups) else 9999,
            )
            self._key = key
        return self._rows


def _select(
    spec: ExperimentSpec,
    by_slot: Mapping[Slot, TrialRecord],
    configs: Mapping[int, Config],
    top: list[str],
) -> _Selection | None:
    """What the design compares: the arms, the confirmation, or the search against the baseline."""
    baseline = [BASELINE] if spec.baseline is not None else []
    if spec.arms:
        names = baseline + [a.name for a in spec.arms]
        return _Selection("arms", names, arm_runs(by_slot), spec.repeats)
    if spec.confirm is not None and top:
        names = baseline + top
        runs = {
            name: [v for s, v in by_slot.items() if s.role == ROLE_CONFIRM and s.config == name]
            for name in names
        }
        return _Selection("confirm", names, runs, spec.confirm.repeats)
    if not baseline or spec.confirm is not None:
        return None
    tried = sorted(k for k, c in configs.items() if c.runs)
    runs = {BASELINE: [v for s, v in by_slot.items() if s.role == ROLE_BASELINE]}
    for k in tried:
        runs[search_config(k)] = [configs[k].runs[r] for r in sorted(configs[k].runs)]
    note = ""
    if len(tried) > 1:
        note = (
            f"one of {len(tried)} configurations the search tried, judged on the runs "
            "that chose them: the best look better than they are (spec.confirm "
            "re-runs them with fresh seeds)"
        )
    return _Selection("search", [BASELINE] + [search_config(k) for k in tried], runs,
                      spec.repeats, note)  # fmt: skip


def _groups(
    spec: ExperimentSpec,
    chosen: _Selection,
    outcome: Mapping[int, TrialPhase | None],
    configs: Mapping[int, Config],
    search_end: tuple[str, str] | None,
) -> list[Group]:
    """Each compared configuration's runs as a :class:`Group`, in ``chosen.names``' order."""
    groups = []
    for name in chosen.names:
        views = sorted(chosen.runs.get(name, []), key=lambda v: v.repeat)
        finals = [(v, outcome.get(v.index)) for v in views]
        values = tuple(
            float(v.values[0]) for v, o in finals if o == TrialPhase.SUCCEEDED and v.values
        )
        failed = sum(1 for _, o in finals if o == TrialPhase.FAILED)
        ended = sum(1 for _, o in finals if o is not None)
        pending = max(0, chosen.planned - ended)
        if chosen.source == "search" and name != BASELINE:
            k = search_index_of(name)
            # Pruned, or the search ended: no more runs come.
            if search_end is not None or (k is not None and configs[k].phase is not None):
                pending = 0
        params = views[0].parameters if views else named_parameters(spec, name, configs)
        groups.append(Group(name, params, values, failed, pending, tuple(v.name for v in views)))
    return groups


def named_parameters(
    spec: ExperimentSpec, name: str, configs: Mapping[int, Config]
) -> dict[str, Any]:
    """The parameters of the configuration ``name``: the baseline, an arm, or a search one."""
    if name == BASELINE and spec.baseline is not None:
        return dict(spec.baseline.parameters)
    for arm in spec.arms or []:
        if arm.name == name:
            return dict(arm.parameters)
    k = search_index_of(name)
    if k is not None and k in configs:
        runs = configs[k].runs
        return dict(runs[min(runs)].parameters) if runs else {}
    return {}
