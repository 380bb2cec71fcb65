"""reporting/svg.py: ticks, scales and colours of the hand-written SVG plots."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from trialforge.reporting.svg import Figure, Scale, colour, log_ticks, nice_ticks, number


def test_axis_ticks() -> None:
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert log_ticks(1e-5, 1e-1) == [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    assert log_ticks(1e-3, 3e-2) == [1e-3, 2e-3, 5e-3, 1e-2, 2e-2]
    assert [number(v) for v in (1e-5, 0.001, 12.5, 2e6)] == ["1e-5", "0.001", "12.5", "2e6"]
    scale = Scale.for_values([], 100, 0, log=True, low=1e-4, high=1e-1)
    assert scale(1e-4) == 100 and scale(1e-1) == 0 and abs(scale(1e-2) - 100 / 3) < 1e-9
    steps = Scale(0, 1000, 0, 100, integer=True)
    assert all(float(t).is_integer() for _, t in steps.ticks())


def test_a_figure_is_well_formed_and_escapes_text() -> None:
    fig = Figure(200, 100, "a < b & c")
    fig.text(10, 10, "<script>", class_="tick")
    fig.polyline([(0, 0), (10, 10)], stroke="red", data_trial="x'y")
    root = ET.fromstring(fig.render())
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "a < b & c" in texts and "<script>" in texts
    line = next(root.iter("{http://www.w3.org/2000/svg}polyline"))
    assert line.get("data-trial") == "x'y" and line.get("points") == "0.0,0.0 10.0,10.0"
    assert colour(0.0) == "#440154" and colour(1.0) == "#fde725"
