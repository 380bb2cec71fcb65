"""The local run's trials table (reporting/table.py) fits the terminal it is printed on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from rich.console import Console

from trialforge.api.validation import load_experiment_file
from trialforge.engine.record import TrialRecord
from trialforge.reporting.table import trials_table

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits-tpe-asha.yaml"
PARAMS = {"lr": 0.0042063, "alpha": 0.0024631, "hidden": 80, "layers": 2, "batch_size": 64}
WHY = "asha stopped it: its val_accuracy trailed the rung's"


def records(name: str) -> list[TrialRecord]:
    out = []
    for index, phase in enumerate(["Succeeded", "Pruned", "Running", "Failed"]):
        r = TrialRecord(f"{name}-{index}", index, 0, phase, dict(PARAMS), seed=index)
        if phase == "Succeeded":
            r = dataclasses.replace(r, values=(0.9822,))
        if phase == "Pruned":
            r = dataclasses.replace(r, message=WHY)
        out.append(r)
    out.append(TrialRecord(f"{name}-3-r1", 3, 1, "Running", dict(PARAMS), seed=3))
    return out


def render(width: int, experiment: str | None = "digits-mlp") -> str:
    spec = load_experiment_file(EXAMPLE).spec
    latest = {f"digits-mlp-{i}": {"val_accuracy": 0.95, "__step__": 6} for i in range(4)}
    table = trials_table(
        spec, records("digits-mlp"), latest, "digits-mlp-0", width=width, experiment=experiment
    )
    console = Console(width=width, record=True, force_terminal=False)
    console.print(table)
    return console.export_text()


def test_a_terminal_of_100_columns_shows_every_value_whole() -> None:
    text = render(100)
    assert "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= 100
    for cell in ("0.004206", "0.002463", "Succeeded", "0.9822", "0 ★", "3-r1"):
        assert cell in text, (cell, text)
    assert "digits-mlp-" not in text  # the headline names the experiment
    assert "note" not in text  # no room left for it


@pytest.mark.parametrize("width", [90, 95])
def test_long_parameter_names_take_two_header_lines_when_that_is_what_fits(width: int) -> None:
    text = render(width)
    assert "…" not in text, text
    assert "batch_" in text and "val_" in text and "batch_size" not in text, text


def test_a_terminal_of_80_columns_shows_every_value_whole_without_column_lines() -> None:
    # The digits example's widest values: 9 characters each.
    spec = load_experiment_file(EXAMPLE).spec
    rows = records("digits-mlp")
    for r in rows:
        r.parameters.update(lr=0.00028262, alpha=4.1853e-05, hidden=128)
    table = trials_table(spec, rows, {}, "digits-mlp-0", width=80, experiment="digits-mlp")
    console = Console(width=80, record=True, force_terminal=False)
    console.print(table)
    text = console.export_text()
    assert "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= 80
    for cell in ("0.0002826", "4.185e-05", "128", "Succeeded", "0.9822", "0 ★", "3-r1"):
        assert cell in text, (cell, text)
    assert "│" not in text  # no lines between the columns


def test_a_wide_terminal_shows_why_a_trial_stopped() -> None:
    text = render(160)
    assert "note" in text and "batch_size" in text
    assert WHY[:30] in text, text


def test_without_the_experiment_name_trials_keep_their_full_names() -> None:
    assert "digits-mlp-3-r1" in render(200, experiment=None)


def comparison_rows() -> list[dict[str, object]]:
    base = {"role": "baseline", "arm": "baseline", "n": 6, "mean": 0.8019, "alpha": 0.05,
            "metric": "val_accuracy", "direction": "maximize", "source": "arms"}  # fmt: skip
    candidates = [
        ("warmup", 0.8315, 0.0296, (0.016, 0.044), (0.022, 0.043), 0.0023, 0.0046, 2.8, "better"),
        ("lr-0.2", 0.7993, -0.0027, (-0.012, 0.0067), (-0.0091, 0.0051), 0.52, 0.52, -0.4,
         "inconclusive"),
    ]  # fmt: skip
    rows: list[dict[str, object]] = [base]
    for arm, mean, diff, ci, boot, p, p_holm, g, verdict in candidates:
        rows.append(
            {"role": "candidate", "arm": arm, "n": 6, "mean": mean, "difference": diff,
             "ciLow": ci[0], "ciHigh": ci[1], "bootstrapLow": boot[0], "bootstrapHigh": boot[1],
             "pValue": p, "pAdjusted": p_holm, "hedgesG": g, "verdict": verdict}
        )  # fmt: skip
    return rows


def render_comparison(width: int) -> str:
    from trialforge.reporting.table import comparison_table

    console = Console(width=width, record=True, force_terminal=False)
    console.print(comparison_table(comparison_rows(), width=width))
    return console.export_text()


def test_a_narrow_comparison_leaves_out_second_opinions_never_folds_a_cell() -> None:
    text = render_comparison(80)
    table = text.split("the first row")[0]
    assert "…" not in table, text
    assert max(len(line.rstrip()) for line in table.splitlines()) <= 80
    assert "boot CI" not in table and "p Holm" in table
    for cell in ("baseline", "inconclusive", "+0.016..+0.044", "0.0046"):
        assert cell in table, (cell, text)


def test_a_wide_comparison_shows_every_column() -> None:
    text = render_comparison(130)
    for header in ("boot CI", "95% CI", "p Holm", " g ", "verdict"):
        assert header in text, (header, text)


def test_an_infeasible_trial_says_which_bound_it_broke() -> None:
    spec = load_experiment_file(EXAMPLE).spec
    rows = [
        TrialRecord("digits-mlp-0", 0, 0, "Succeeded", dict(PARAMS), values=(0.97,),
                    message="infeasible: latency_ms = 31 > max 20",
                    constraints={"latency_ms": 31.0}, feasible=False),
        TrialRecord("digits-mlp-1", 1, 0, "Succeeded", dict(PARAMS), values=(0.95,),
                    message="trial completed", constraints={"latency_ms": 9.0}, feasible=True),
    ]  # fmt: skip
    console = Console(width=200, record=True, force_terminal=False)
    console.print(trials_table(spec, rows, {}, "digits-mlp-1", width=200, experiment="digits-mlp"))
    lines = console.export_text().splitlines()
    assert any(
        "infeasible: latency_ms" in line and line.lstrip("│ ").startswith("0") for line in lines
    )
    assert not any("trial completed" in line and "1 ★" in line for line in lines)
