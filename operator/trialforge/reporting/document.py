"""``trialforge report``: one self-contained HTML or Markdown file about an experiment.

What a data scientist attaches to a decision: what was run (design, budget,
code and data versions), how it ended, the comparison with the baseline
(differences with Welch and bootstrap intervals, p-values, Holm, effect sizes,
verdicts and their notes), the optimisation history, parameter importances, a
parallel-coordinates plot, the learning curves, and every trial's lineage with the command that
reproduces the best one.  Plots are SVG (reporting.plots), inline in HTML and
base64 data URIs in Markdown, so the file needs nothing beside it.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trialforge.engine.planner import design_summary
from trialforge.reporting import plots
from trialforge.reporting.reproduce import reproduction
from trialforge.reporting.rundata import RunData, latest_attempts, study_of

FORMATS = ("html", "md")


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _num(value: Any, spec: str = ".4g") -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _p(value: Any) -> str:
    if value is None:
        return ""
    return "<0.0001" if value < 1e-4 else f"{value:.3g}"


def _ci(low: Any, high: Any) -> str:
    if low is None or high is None:
        return ""
    return f"[{low:+.4g}, {high:+.4g}]"


def make_plots(data: RunData, folder: Path) -> dict[str, Path]:
    """Every plot the report shows, as SVG files in ``folder``."""
    spec = data.spec
    made = {
        "Optimisation history": plots.history(spec, data.records, folder / "history.svg"),
        "Against the baseline": plots.comparison(
            data.state.get("comparison") or [], folder / "comparison.svg"
        ),
        "Parameter importances": None
        if spec.arms
        else plots.importances(study_of(data), spec, folder / "importances.svg"),
        "Parallel coordinates": plots.parallel_coordinates(
            spec, data.records, folder / "parallel.svg"
        ),
        "Learning curves": plots.learning_curves(
            spec, data.records, folder / "learning-curves.svg", data.observations
        ),
    }
    if spec.multi_objective:
        front = [r for r in data.records if r.name in _front_names(data)]
        made["Pareto front"] = plots.pareto(spec, data.records, front, folder / "pareto.svg")
    return {title: path for title, path in made.items() if path is not None}


def _front_names(data: RunData) -> set[str]:
    return {b.get("trial") for b in data.state.get("paretoFront") or []}


def _summary_rows(data: RunData) -> list[tuple[str, str]]:
    spec = data.spec
    state = data.state
    counts = state.get("trials") or {}
    objectives = ", ".join(f"{o.direction} {o.metric}" for o in spec.all_objectives)
    search = (
        "none (arms)"
        if spec.arms
        else f"{spec.search.algorithm}, early stopping {spec.early_stopping.algorithm}"
    )
    rows = [
        ("Experiment", data.name),
        ("Source", data.source),
        (
            "Outcome",
            f"{state.get('phase', '?')} ({state.get('reason', '')}): {state.get('message', '')}",
        ),
        ("Objective", objectives),
        ("Design", design_summary(spec)),
        ("Search", search),
        ("Comparison", f"{spec.comparison.test}, alpha {spec.comparison.alpha:g}"),
        ("Trials", ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "none"),
        ("Code version", spec.code_version or "(not set: spec.codeVersion)"),
        ("Data version", spec.data_version or "(not set: spec.dataVersion)"),
    ]
    start, end = state.get("startTime"), state.get("completionTime")
    if start:
        rows.append(("Ran", f"{start} to {end or '(running)'}"))
    best = state.get("best")
    if best:
        value = best.get("value")
        params = ", ".join(f"{k}={v}" for k, v in (best.get("parameters") or {}).items())
        text = f"{best.get('trial')}: {_num(value)} with {params}"
        if best.get("runs", 1) > 1:
            text += f" (mean of {best['runs']} runs of {best.get('config')})"
        rows.append(("Best", text))
        if best.get("artifactUri"):
            rows.append(("Best artifact", best["artifactUri"]))
    return rows


def _comparison_header(data: RunData) -> tuple[str, list[str], list[list[str]], list[str]]:
    """(title, columns, rows, notes) of the comparison table; empty rows when none."""
    rows = data.state.get("comparison") or []
    base = next((r for r in rows if r.get("role") == "baseline"), None)
    if base is None:
        return "", [], [], []
    alpha = float(base.get("alpha", 0.05))
    title = (
        f"{base.get('metric')} ({base.get('direction')}), candidates against "
        f"'{base['arm']}' on the {base.get('source')} runs; {base.get('test')} test, "
        f"alpha {alpha:g}, Holm-adjusted across candidates"
        + (" — INTERIM: runs are still going" if base.get("interim") else "")
    )
    columns = ["arm", "n", "failed", "mean", "sd", "difference", f"{1 - alpha:.0%} CI (Welch)",
               f"{1 - alpha:.0%} CI (bootstrap)", "p", "p (Holm)", "Hedges' g", "test",
               "verdict"]  # fmt: skip
    label = base["arm"] if base["arm"] == "baseline" else f"{base['arm']} (baseline)"
    table = [
        [label, _num(base.get("n")), _num(base.get("failed")),
         _num(base.get("mean")), _num(base.get("sd")), "", "", "", "", "", "", "", ""]
    ]  # fmt: skip
    notes = []
    for r in rows:
        if r.get("role") == "candidate":
            table.append(
                [r["arm"], _num(r.get("n")), _num(r.get("failed")), _num(r.get("mean")),
                 _num(r.get("sd")),
                 "" if r.get("difference") is None else f"{r['difference']:+.4g}",
                 _ci(r.get("ciLow"), r.get("ciHigh")),
                 _ci(r.get("bootstrapLow"), r.get("bootstrapHigh")),
                 _p(r.get("pValue")), _p(r.get("pAdjusted")), _num(r.get("hedgesG"), "+.3g"),
                 r.get("test", ""), r.get("verdict", "")]
            )  # fmt: skip
            if r.get("note"):
                notes.append(f"{r['arm']}: {r['note']}")
        elif r.get("role") == "omnibus":
            arms = r.get("armCount") or len(r.get("arms") or [])
            notes.append(
                f"Across all {arms} arms ({r.get('test')} one-way test): "
                f"statistic {_num(r.get('statistic'))}, p {_p(r.get('pValue'))}"
                + (f"; {r['note']}" if r.get("note") else "")
            )
        elif r.get("role") == "passFail":
            rates = ", ".join(f"{k} {v:.0%}" for k, v in (r.get("passRates") or {}).items())
            notes.append(
                f"Runs that succeeded per arm ({r.get('test')}): {rates}; "
                f"p {_p(r.get('pValue'))}" + (f"; {r['note']}" if r.get("note") else "")
            )
    return title, columns, table, notes


def _lineage(data: RunData) -> tuple[list[str], list[list[str]]]:
    spec = data.spec
    metric = spec.all_objectives[0].metric
    columns = ["trial", "role", "config", "repeat", "seed", "phase", metric,
               *[p.name for p in spec.parameters], "start", "end", "node", "GPU", "image",
               "code", "data", "artifact"]  # fmt: skip
    rows = []
    for r in latest_attempts(data.records):
        rows.append(
            [r.name, r.role or "search", r.config or "", str(r.repeat), str(r.seed), r.phase,
             _num(r.values[0]) if r.values else "",
             *[_num(r.parameters.get(p.name)) for p in spec.parameters],
             _when(r.start_time), _when(r.completion_time), r.node or "", r.gpu_type or "",
             r.image_digest or "", r.code_version or "", r.data_version or "",
             r.artifact_uri or ""]
        )  # fmt: skip
    return columns, rows


def _reproduce_line(data: RunData) -> str:
    best = (data.state.get("best") or {}).get("trial")
    if not best:
        return ""
    try:
        record = data.record(best)
    except KeyError:
        return ""
    if data.namespace:
        return f"trialforge reproduce {best} -n {data.namespace}"
    return reproduction(data, record).shell()


# -- HTML --------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.kv td{text-align:left;white-space:normal}.kv td:first-child{font-weight:600}
.better{color:#1a7f37;font-weight:600}.worse{color:#c0392b;font-weight:600}
.inconclusive{color:#9a6700}.note{color:#555;font-size:.9em}
.scroll{overflow-x:auto}code,pre{background:#f6f8fa;padding:.2em .4em;border-radius:4px}
pre{padding:.8em;overflow-x:auto;white-space:pre-wrap}img,svg{max-width:100%;height:auto}
figure.plot{margin:0}
"""


def _html_table(columns: Sequence[str], rows: Sequence[Sequence[str]], verdict: int = -1) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = f' class="{html.escape(cell)}"' if i == verdict and cell else ""
            cells.append(f"<td{cls}>{html.escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _data_uri(path: Path) -> str:
    mime = "image/svg+xml" if path.suffix == ".svg" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def render_html(data: RunData, images: dict[str, Path]) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Trialforge report: {e(data.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Experiment {e(data.name)}</h1>",
        '<table class="kv">'
        + "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in _summary_rows(data))
        + "</table>",
    ]
    title, columns, rows, notes = _comparison_header(data)
    parts.append("<h2>Comparison with the baseline</h2>")
    if rows:
        parts.append(f"<p>{e(title)}</p>")
        parts.append(_html_table(columns, rows, verdict=len(columns) - 1))
        parts.extend(f'<p class="note">{e(n)}</p>' for n in notes)
    else:
        parts.append(
            "<p>No comparison: set spec.baseline, spec.arms or spec.confirm to compare "
            "configurations with repeated runs.</p>"
        )
    for name, path in images.items():
        # An SVG inline (its text and its trials' titles stay readable and searchable).
        body = (
            path.read_text(encoding="utf-8")
            if path.suffix == ".svg"
            else f"<img alt='{e(name)}' src='{_data_uri(path)}'>"
        )
        parts.append(f"<h2>{e(name)}</h2><figure class='plot'>{body}</figure>")
    columns, rows = _lineage(data)
    parts.append("<h2>Trials and lineage</h2>")
    parts.append(_html_table(columns, rows))
    line = _reproduce_line(data)
    if line:
        parts.append(f"<p>Reproduce the best trial:</p><pre>{e(line)}</pre>")
    parts.append(
        f"<p class='note'>Written by trialforge report on "
        f"{_when(dt.datetime.now(dt.UTC).timestamp())}.</p></body></html>"
    )
    return "\n".join(parts)


# -- Markdown ------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(_md_cell(c) for c in columns) + " |"]
    out.append("|" + "|".join("---" for _ in columns) + "|")
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def render_markdown(data: RunData, images: dict[str, Path]) -> str:
    parts = [f"# Experiment {data.name}", ""]
    parts.append(_md_table(["", ""], [[f"**{k}**", v] for k, v in _summary_rows(data)]))
    parts += ["", "## Comparison with the baseline", ""]
    title, columns, rows, notes = _comparison_header(data)
    if rows:
        parts += [title, "", _md_table(columns, rows), ""]
        parts += [f"- {n}" for n in notes]
    else:
        parts.append(
            "No comparison: set spec.baseline, spec.arms or spec.confirm to compare "
            "configurations with repeated runs."
        )
    for name, path in images.items():
        parts += ["", f"## {name}", "", f"![{name}]({_data_uri(path)})"]
    columns, rows = _lineage(data)
    parts += ["", "## Trials and lineage", "", _md_table(columns, rows)]
    line = _reproduce_line(data)
    if line:
        parts += ["", "Reproduce the best trial:", "", "```sh", line, "```"]
    return "\n".join(parts) + "\n"


def write_report(data: RunData, out: Path, fmt: str = "html") -> Path:
    """Render the report of ``data`` into ``out``."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    with tempfile.TemporaryDirectory(prefix="trialforge-report-") as tmp:
        images = make_plots(data, Path(tmp))
        text = render_html(data, images) if fmt == "html" else render_markdown(data, images)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out
