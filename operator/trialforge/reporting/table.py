"""The live progress table and the final summary of a local run, with rich."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from trialforge.api.experiment import ExperimentSpec
from trialforge.api.status import MAX_PARETO_FRONT
from trialforge.engine.planner import Plan, planned_trials
from trialforge.engine.status import spread_front

PHASE_STYLE = {
    "Pending": "dim",
    "Running": "cyan",
    "Succeeded": "green",
    "Failed": "red",
    "Pruned": "yellow",
    "Cancelled": "magenta",
}


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


NOTE_MIN_WIDTH = 16  # narrower than this, the note column is left out


def trials_table(
    spec: ExperimentSpec,
    records: Sequence[Any],
    latest: Mapping[str, Mapping[str, float]],
    best_name: str | None,
    max_rows: int = 30,
    width: int | None = None,
    experiment: str | None = None,
    total: int | None = None,
) -> Table:
    """One row per trial: what a person watches first (active, then recent).

    ``total`` is how many trials there are when ``records`` holds only those a
    live table shows (the caption counts the others).

    Trials are shown by what follows the experiment's name (``7``, ``7-r1``), which
    the headline names.  Every column but the note is sized to its content; the
    note (why a trial stopped) gets what is left of ``width`` and is left out when
    that is too little, so a terminal of 100 columns shows every parameter whole
    instead of an ellipsis in each.
    """
    objectives = [o.metric for o in spec.all_objectives]
    prefix = f"{experiment}-" if experiment else ""
    # Active trials first, then the most recent ones: what a person watches.
    ordered = sorted(records, key=lambda r: (r.phase not in ("Running", "Pending"), -r.index))
    rows = []
    notes = []
    for r in ordered[:max_rows]:
        values = latest.get(r.name, {})
        step = values.get("__step__")
        label = r.name[len(prefix) :] if prefix and r.name.startswith(prefix) else r.name
        best = r.name == best_name
        rows.append(
            [
                Text(label + (" ★" if best else ""), style="bold" if best else ""),
                Text(r.phase, style=PHASE_STYLE.get(r.phase, "")),
                *[fmt(r.parameters.get(p.name, "")) for p in spec.parameters],
                *[
                    fmt(r.values[i]) if r.values else fmt(values[m]) if m in values else ""
                    for i, m in enumerate(objectives)
                ],
                "" if step is None else str(int(step)),
            ]
        )
        # Why a trial stopped, or which of spec.constraints a succeeded one violated.
        shown = r.phase not in ("Running", "Succeeded") or getattr(r, "feasible", None) is False
        notes.append(r.message or r.reason or "" if shown else "")
    headers = ["trial", "phase", *(p.name for p in spec.parameters), *objectives, "step"]

    def build(headers: list[str], note_width: int = 0, compact: bool = False) -> Table:
        table = (
            # No lines between the columns and none at the edges, and one space
            # between two cells instead of two: 2 characters a column instead of 3.
            Table(
                expand=False,
                header_style="bold",
                box=box.SIMPLE_HEAD,
                show_edge=False,
                pad_edge=False,
                collapse_padding=True,
            )
            if compact
            else Table(expand=False, header_style="bold")
        )
        for i, header in enumerate(headers):
            table.add_column(header, justify="left" if i < 2 else "right", no_wrap=True)
        if note_width:
            table.add_column("note", overflow="ellipsis", no_wrap=True, max_width=note_width)
        for row, note in zip(rows, notes, strict=True):
            table.add_row(*row, *([note] if note_width else []))
        hidden = (len(records) if total is None else total) - len(rows)
        if hidden > 0:
            table.caption = f"{hidden} more trials not shown"
        return table

    used = _natural_width(build(headers))
    if width is not None and used > width:
        # Too wide: names like batch_size and val_accuracy take two header lines,
        # so that the values under them are not cut short.
        headers = [h.replace("_", "_\n") for h in headers]
        used = _natural_width(build(headers))
    if width is not None and used > width:
        # Still too wide (80 columns, a pipe's width): drop the lines between columns.
        return build(headers, compact=True)
    room = 36 if width is None else min(36, width - used - 3)  # a column costs 3 more
    return build(headers, room if room >= NOTE_MIN_WIDTH and any(notes) else 0)


def _natural_width(table: Table) -> int:
    """How wide the table is when nothing limits it."""
    return _MEASURE.measure(table).maximum


_MEASURE = Console(width=10_000)


def headline(name: str, spec: ExperimentSpec, plan: Plan | None) -> Text:
    text = Text(f"experiment {name}", style="bold")
    if plan is None:
        return text
    c = plan.counts
    text.append(
        f"  {c['total']}/{planned_trials(spec)} trials · {c['running']} running · "
        f"{c['succeeded']} succeeded · {c['failed']} failed · {c['pruned']} pruned"
    )
    if plan.best is not None:
        o = spec.all_objectives[0]
        text.append(
            f"\nbest: {plan.best.name}  {o.metric}={fmt(plan.best.values[0])}  ", style="green"
        )
        text.append(", ".join(f"{k}={fmt(v)}" for k, v in plan.best.parameters.items()))
    elif plan.pareto_front:
        text.append(f"\nPareto front: {len(plan.pareto_front)} trials", style="green")
    return text


def progress(name: str, spec: ExperimentSpec, plan: Plan | None, table: Table) -> Group:
    return Group(headline(name, spec, plan), table)


def pareto_table(spec: ExperimentSpec, plan: Plan) -> Table:
    """The Pareto front, as the Experiment's status lists it: at most MAX_PARETO_FRONT
    members spread along it."""
    front = spread_front(plan.pareto_front, MAX_PARETO_FRONT)
    table = Table(title="Pareto front", header_style="bold")
    if len(front) < len(plan.pareto_front):
        table.caption = f"{len(front)} of its {len(plan.pareto_front)} trials, spread along it"
    table.add_column("trial")
    for o in spec.all_objectives:
        table.add_column(f"{o.metric} ({o.direction[:3]})", justify="right")
    for p in spec.parameters:
        table.add_column(p.name, justify="right")
    for b in front:
        table.add_row(
            b.name,
            *[fmt(v) for v in b.values],
            *[fmt(b.parameters[p.name]) for p in spec.parameters],
        )
    return table


VERDICT_STYLE = {"better": "bold green", "worse": "bold red", "inconclusive": "yellow"}


def _interval(low: Any, high: Any) -> str:
    if low is None or high is None:
        return ""
    return f"{low:+.2g}..{high:+.2g}"


def _short(value: Any) -> str:
    return "" if value is None else f"{value:.4g}"


def _p(value: Any) -> str:
    if value is None:
        return ""
    return "<1e-4" if value < 1e-4 else f"{value:.2g}"


def comparison_table(rows: Sequence[Mapping[str, Any]], width: int | None = None) -> Group | None:
    """The verdicts of candidates against the baseline (engine.comparison rows).

    Cells never fold into several lines: where the table is wider than ``width``,
    the bootstrap interval (a second opinion on the t interval), then Hedges' g,
    then the unadjusted p (the Holm-adjusted one decides) are left out."""
    base = next((r for r in rows if r.get("role") == "baseline"), None)
    if base is None:
        return None
    alpha = base.get("alpha", 0.05)
    interim = " (interim: runs still going)" if base.get("interim") else ""
    ci = f"{1 - alpha:.0%} CI"
    cells: list[dict[str, str | Text]] = [
        {"arm": Text(f"{base['arm']}", style="bold"), "n": str(base.get("n", 0)),
         "mean": _short(base.get("mean"))}
    ]  # fmt: skip
    for r in rows:
        if r.get("role") != "candidate":
            continue
        verdict = r.get("verdict", "")
        cells.append(
            {
                "arm": r["arm"],
                "n": str(r.get("n", 0)),
                "mean": _short(r.get("mean")),
                "diff": "" if r.get("difference") is None else f"{r['difference']:+.2g}",
                ci: _interval(r.get("ciLow"), r.get("ciHigh")),
                "boot CI": _interval(r.get("bootstrapLow"), r.get("bootstrapHigh")),
                "p": _p(r.get("pValue")),
                "p Holm": _p(r.get("pAdjusted")),
                "g": "" if r.get("hedgesG") is None else f"{r['hedgesG']:+.1f}",
                "verdict": Text(verdict, style=VERDICT_STYLE.get(verdict, "")),
            }
        )
    columns = ["arm", "n", "mean", "diff", ci, "boot CI", "p", "p Holm", "g", "verdict"]
    for left_out in ((), ("boot CI",), ("boot CI", "g"), ("boot CI", "g", "p")):
        shown = [c for c in columns if c not in left_out]
        table = Table(
            title=f"{base.get('metric')} ({base.get('direction')}) vs {base['arm']}, "
            f"{base.get('source')} runs, alpha={alpha:g}{interim}",
            header_style="bold",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            caption="the first row is the baseline; diff = arm - baseline",
        )
        for name in shown:
            table.add_column(
                name,
                justify="left" if name in ("arm", "verdict") else "right",
                no_wrap=True,
                overflow="ellipsis",
            )
        for row in cells:
            table.add_row(*[row.get(name, "") for name in shown])
        if width is None or _natural_width(table) <= width:
            break
    notes = []
    for r in rows:
        if r.get("role") == "candidate" and r.get("note"):
            notes.append(Text(f"  {r['arm']}: {r['note']}", style="dim"))
        elif r.get("role") == "omnibus":
            notes.append(
                Text(
                    f"  across all arms ({r.get('test')} ANOVA): p={_p(r.get('pValue'))}"
                    + (f"; {r['note']}" if r.get("note") else ""),
                    style="dim",
                )
            )
        elif r.get("role") == "passFail":
            rates = ", ".join(f"{k} {v:.0%}" for k, v in (r.get("passRates") or {}).items())
            notes.append(
                Text(
                    f"  runs that succeeded ({r.get('test')}): {rates}; p={_p(r.get('pValue'))}"
                    + (f"; {r['note']}" if r.get("note") else ""),
                    style="dim",
                )
            )
    return Group(table, *notes)
