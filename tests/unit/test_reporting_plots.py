"""reporting/plots.py: the SVG plots say what a reader needs (axes, values, faded trials)."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.rundirs import TRIALS, make_run
from trialforge.reporting import plots
from trialforge.reporting.rundata import from_run_dir

NS = {"s": "http://www.w3.org/2000/svg"}


def _svg(text: str | None) -> ET.Element:
    assert text is not None
    return ET.fromstring(text)  # well-formed XML, or this raises


def _axes(root: ET.Element) -> dict[str, list[str]]:
    """Each axis's name -> its tick labels."""
    return {
        g.get("data-axis", ""): [t.text or "" for t in g.findall("s:text[@class='tick']", NS)]
        for g in root.iter("{http://www.w3.org/2000/svg}g")
        if g.get("class") == "axis"
    }


def _trials(root: ET.Element) -> dict[str, ET.Element]:
    return {
        e.get("data-trial", ""): e for e in root.iter() if "trial" in (e.get("class") or "").split()
    }


@pytest.fixture()
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    return from_run_dir(make_run(tmp_path / "run"))


def test_parallel_coordinates_label_every_axis_with_its_values(run) -> None:  # type: ignore[no-untyped-def]
    root = _svg(plots.parallel_svg(run.spec, run.records))
    axes = _axes(root)
    assert list(axes) == ["lr (log)", "opt", "layers", "acc (maximize)"]
    # A log axis: powers of ten (with 2 and 5 between, under three decades: 1e-4..1e-1 is three).
    assert axes["lr (log)"] == ["1e-4", "0.001", "0.01", "0.1"]
    assert axes["opt"] == ["sgd", "adam"]
    assert axes["layers"] == ["1", "2", "3", "4"]  # an int parameter: whole numbers
    assert axes["acc (maximize)"] and all(0.7 <= float(t) <= 0.95 for t in axes["acc (maximize)"])
    titles = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")
              if t.get("class") == "axis-title"]  # fmt: skip
    assert titles == list(axes)


def test_parallel_coordinates_show_pruned_and_failed_trials_faded(run) -> None:  # type: ignore[no-untyped-def]
    trials = _trials(_svg(plots.parallel_svg(run.spec, run.records)))
    ended = {f"demo-{i}": t[0] for i, t in TRIALS.items() if t[0] not in ("Running", "Pending")}
    assert set(trials) == set(ended)  # running and pending trials are not drawn
    for name, phase in ended.items():
        classes = trials[name].get("class", "").split()
        assert phase.lower() in classes
        faded = phase != "Succeeded"
        assert ("faded" in classes) is faded, name
        assert (float(trials[name].get("opacity", 1)) < 0.5) is faded
        points = trials[name].get("points", "").split()
        # Succeeded: through every parameter and the objective; the others: parameters only.
        assert len(points) == (4 if phase == "Succeeded" else 3), name
    # A point on the lr axis sits where its value's tick is: demo-0 has lr 1e-3.
    root = _svg(plots.parallel_svg(run.spec, run.records))
    axis = next(g for g in root.iter("{http://www.w3.org/2000/svg}g")
                if g.get("data-axis") == "lr (log)")  # fmt: skip
    tick = next(t for t in axis.findall("s:text[@class='tick']", NS) if t.text == "0.001")
    y = float(trials["demo-0"].get("points", "").split()[0].split(",")[1])
    assert abs(y - (float(tick.get("y", 0)) - 3.5)) < 0.2


def test_learning_curves_draw_every_trial_by_step_and_mark_where_pruned_ones_stopped(
    run,  # type: ignore[no-untyped-def]
) -> None:
    root = _svg(plots.learning_curves_svg(run.spec, run.records, run.observations))
    axes = _axes(root)
    assert axes["step"] == ["1", "2", "3", "4"]
    assert axes.get("acc")
    trials = _trials(root)
    with_curves = {f"demo-{i}" for i, t in TRIALS.items() if t[4] and t[0] != "Running"}
    assert with_curves <= set(trials)  # the running one's observations are in its log only
    for name in with_curves:
        phase = TRIALS[int(name.split("-")[1])][0]
        assert ("faded" in trials[name].get("class", "")) is (phase != "Succeeded")
    stops = {e.get("data-trial"): e for e in root.iter() if "stop" in (e.get("class") or "")}
    pruned = {n for n, e in stops.items() if "pruned" in (e.get("class") or "")}
    assert pruned == {"demo-2", "demo-5"}
    assert stops["demo-2"].get("data-step") == "2" and stops["demo-5"].get("data-step") == "3"
    assert "failed" in (stops["demo-4"].get("class") or "")
    best = [n for n, e in trials.items() if "best" in (e.get("class") or "").split()]
    assert best == ["demo-3"]


def test_write_all_draws_svg_without_matplotlib_or_scikit_learn(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from trialforge.reporting import plots\n"
        "from trialforge.reporting.rundata import from_run_dir\n"
        f"d = from_run_dir({str(run_dir)!r})\n"
        f"made = plots.write_all(d.spec, d.records, None, [], Path({str(run_dir)!r}))\n"
        "print(sorted(p.name for p in made))\n"
        "print([m for m in ('matplotlib', 'sklearn', 'optuna.importance') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    made, heavy = out.stdout.splitlines()
    assert made == "['history.svg', 'learning-curves.svg', 'parallel.svg']"
    assert heavy == "[]"
    # Observations read from the run directory's journal: the pruned trials' curves are there.
    root = _svg((run_dir / "learning-curves.svg").read_text())
    assert {"demo-2", "demo-5"} <= set(_trials(root))


def test_importances_and_comparison_are_labelled(run) -> None:  # type: ignore[no-untyped-def]
    root = _svg(plots.importances_svg({"lr": 0.7, "opt": 0.2, "layers": 0.1}))
    bars = [e.get("data-parameter") for e in root.iter() if e.get("class") == "bar"]
    assert bars == ["lr", "opt", "layers"]
    assert _axes(root)["importance"][0] == "0"
    rows = [
        {"role": "baseline", "arm": "base", "metric": "acc", "direction": "maximize"},
        {"role": "candidate", "arm": "b", "difference": 0.05, "ciLow": 0.01, "ciHigh": 0.09,
         "verdict": "better"},
    ]  # fmt: skip
    root = _svg(plots.comparison_svg(rows))
    assert any("better" in (e.get("class") or "") for e in root.iter())
    assert plots.comparison_svg(rows[:1]) is None
