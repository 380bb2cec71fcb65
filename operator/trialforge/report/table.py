"""The live progress table and the final summary of a local run, with rich."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from trialforge.api.experiment import ExperimentSpec
from trialforge.engine.planner import Plan

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


def trials_table(
    spec: ExperimentSpec,
    records: Sequence[Any],
    latest: Mapping[str, Mapping[str, float]],
    best_name: str | None,
    max_rows: int = 30,
) -> Table:
    objectives = [o.metric for o in spec.all_objectives]
    table = Table(expand=False, header_style="bold")
    table.add_column("trial")
    table.add_column("phase")
    for p in spec.parameters:
        table.add_column(p.name, justify="right")
    for metric in objectives:
        table.add_column(metric, justify="right")
    table.add_column("step", justify="right")
    table.add_column("note", overflow="ellipsis", no_wrap=True, max_width=36)
    # Active trials first, then the most recent ones: what a person watches.
    ordered = sorted(records, key=lambda r: (r.phase not in ("Running", "Pending"), -r.index))
    for r in ordered[:max_rows]:
        values = latest.get(r.name, {})
        step = values.get("__step__")
        row = [
            Text(
                r.name + (" ★" if r.name == best_name else ""),
                style="bold" if r.name == best_name else "",
            ),
            Text(r.phase, style=PHASE_STYLE.get(r.phase, "")),
            *[fmt(r.parameters.get(p.name, "")) for p in spec.parameters],
            *[
                fmt(r.values[i]) if r.values else fmt(values[m]) if m in values else ""
                for i, m in enumerate(objectives)
            ],
            "" if step is None else str(int(step)),
            r.message or r.reason or "" if r.phase not in ("Running", "Succeeded") else "",
        ]
        table.add_row(*row)
    if len(records) > max_rows:
        table.caption = f"{len(records) - max_rows} more trials not shown"
    return table


def headline(name: str, spec: ExperimentSpec, plan: Plan | None) -> Text:
    text = Text(f"experiment {name}", style="bold")
    if plan is None:
        return text
    c = plan.counts
    text.append(
        f"  {c['total']}/{spec.budget.max_trials} trials · {c['running']} running · "
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
    table = Table(title="Pareto front", header_style="bold")
    table.add_column("trial")
    for o in spec.all_objectives:
        table.add_column(f"{o.metric} ({o.direction[:3]})", justify="right")
    for p in spec.parameters:
        table.add_column(p.name, justify="right")
    for b in plan.pareto_front:
        table.add_row(
            b.name,
            *[fmt(v) for v in b.values],
            *[fmt(b.parameters[p.name]) for p in spec.parameters],
        )
    return table
