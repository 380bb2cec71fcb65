"""A small SVG writer for the run's plots: axes with ticks, lines, markers, text.

Plots are drawn as SVG text by hand, with the standard library only, so that
the end of ``trialforge run`` does not pay for importing matplotlib (seconds)
and a report or the dashboard can inline them. Every element that stands for a
trial carries ``class`` names (``trial``, its phase in lower case, ``faded``)
and ``data-trial``, so a test, or a browser's inspector, can tell which is which.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

FONT = "font-family='system-ui,-apple-system,Segoe UI,Roboto,sans-serif'"

# A perceptually ordered ramp (viridis' ends and middle): worst -> best.
RAMP = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
FADED = "#9a9a9a"
FAILED = "#c44e52"
RUNNING = "#4c72b0"


def colour(t: float) -> str:
    """A colour of :data:`RAMP` at ``t`` in [0, 1]."""
    t = min(1.0, max(0.0, t if math.isfinite(t) else 0.0)) * (len(RAMP) - 1)
    i = min(int(t), len(RAMP) - 2)
    f = t - i
    a, b = RAMP[i], RAMP[i + 1]
    mixed = [round(int(a[k : k + 2], 16) * (1 - f) + int(b[k : k + 2], 16) * f) for k in (1, 3, 5)]
    return "#" + "".join(f"{c:02x}" for c in mixed)


def number(value: float) -> str:
    """A tick label: short, and exact for the values ticks take."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e5 or magnitude < 1e-3:
        mantissa, exponent = f"{value:.2e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.4g}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values between ``low`` and ``high`` (both included when they are equal)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high < low:
        low, high = high, low
    if high == low:
        return [low]
    raw = (high - low) / max(1, count)
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * step:
            step *= m
            break
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    k = 0
    while first + k * step <= high + step * 1e-9:
        ticks.append(round(first + k * step, 12))
        k += 1
    return ticks


def log_ticks(low: float, high: float) -> list[float]:
    """Powers of ten between ``low`` > 0 and ``high``; with 1, 2 and 5 of each
    decade when the range spans less than three decades."""
    if low <= 0 or high <= 0 or not (math.isfinite(low) and math.isfinite(high)):
        return []
    lo, hi = math.floor(math.log10(low)), math.ceil(math.log10(high))
    mantissas = (1, 2, 5) if hi - lo < 3 else (1,)
    eps = 1e-9 * high
    ticks = [
        m * 10.0**e
        for e in range(lo, hi + 1)
        for m in mantissas
        if low - eps <= m * 10.0**e <= high + eps
    ]
    if len(ticks) < 2:
        ticks = sorted({low, *ticks, high})
    return ticks


@dataclass
class Scale:
    """Data -> pixels along one axis: linear, log or categorical."""

    low: float
    high: float
    start: float  # pixel of ``low``
    end: float  # pixel of ``high``
    log: bool = False
    categories: Sequence[str] | None = None
    integer: bool = False  # ticks on whole numbers only (an int parameter, a step)

    @classmethod
    def for_values(
        cls,
        values: Iterable[float],
        start: float,
        end: float,
        log: bool = False,
        low: float | None = None,
        high: float | None = None,
        pad: float = 0.0,
    ) -> Scale:
        finite = [v for v in values if math.isfinite(v) and (v > 0 or not log)]
        lo = low if low is not None else (min(finite) if finite else 0.0)
        hi = high if high is not None else (max(finite) if finite else 1.0)
        if log and (lo <= 0 or hi <= 0):
            log = False
        if hi == lo:
            lo, hi = (lo / 2, hi * 2) if log else (lo - 0.5, hi + 0.5)
        elif pad:
            if log:
                span = math.log10(hi) - math.log10(lo)
                lo, hi = lo / 10 ** (span * pad), hi * 10 ** (span * pad)
            else:
                span = hi - lo
                lo, hi = lo - span * pad, hi + span * pad
        return cls(lo, hi, start, end, log)

    @classmethod
    def categorical(cls, names: Sequence[str], start: float, end: float) -> Scale:
        return cls(0.0, max(1.0, len(names) - 1.0), start, end, categories=list(names))

    def fraction(self, value: float) -> float:
        if self.log:
            lo, hi, v = math.log10(self.low), math.log10(self.high), math.log10(max(value, 1e-300))
        else:
            lo, hi, v = self.low, self.high, value
        return (v - lo) / ((hi - lo) or 1.0)

    def __call__(self, value: float) -> float:
        return self.start + (self.end - self.start) * self.fraction(value)

    def position(self, value: object) -> float | None:
        """A parameter's value on this axis (a category by its name), None if off it."""
        if self.categories is not None:
            names = list(self.categories)
            text = str(value)
            return self(float(names.index(text))) if text in names else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not math.isfinite(value) or (self.log and value <= 0):
            return None
        return self(float(value))

    def ticks(self) -> list[tuple[float, str]]:
        """(pixel, label) of each tick."""
        if self.categories is not None:
            return [(self(float(i)), str(c)) for i, c in enumerate(self.categories)]
        values = log_ticks(self.low, self.high) if self.log else nice_ticks(self.low, self.high)
        if self.integer and not self.log:
            lo, hi = math.ceil(self.low), math.floor(self.high)
            if hi - lo <= 8:
                values = [float(v) for v in range(lo, hi + 1)]
            else:
                values = [v for v in values if v == int(v)]
        return [(self(v), number(v)) for v in values]


def _attrs(**attrs: object) -> str:
    out = []
    for key, value in attrs.items():
        if value is None:
            continue
        name = key.rstrip("_").replace("_", "-")
        out.append(f'{name}="{html.escape(str(value), quote=True)}"')
    return " ".join(out)


def _pt(x: float, y: float) -> str:
    return f"{x:.1f},{y:.1f}"


@dataclass
class Figure:
    """An SVG document built element by element."""

    width: int
    height: int
    title: str = ""
    parts: list[str] = field(default_factory=list)

    def add(self, element: str) -> None:
        self.parts.append(element)

    def line(self, x1: float, y1: float, x2: float, y2: float, **attrs: object) -> None:
        attrs.setdefault("stroke", "#333")
        self.add(
            f"<line x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' {_attrs(**attrs)}/>"
        )

    def polyline(self, points: Sequence[tuple[float, float]], **attrs: object) -> None:
        attrs.setdefault("fill", "none")
        pts = " ".join(_pt(x, y) for x, y in points)
        self.add(f"<polyline points='{pts}' {_attrs(**attrs)}/>")

    def circle(self, x: float, y: float, r: float = 3.0, **attrs: object) -> None:
        self.add(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{r:g}' {_attrs(**attrs)}/>")

    def cross(self, x: float, y: float, size: float = 4.0, **attrs: object) -> None:
        """An x: where a pruned trial stopped."""
        d = f"M{x - size:.1f},{y - size:.1f}L{x + size:.1f},{y + size:.1f}"
        d += f"M{x - size:.1f},{y + size:.1f}L{x + size:.1f},{y - size:.1f}"
        attrs.setdefault("stroke-width", 2)
        self.add(f"<path d='{d}' fill='none' {_attrs(**attrs)}/>")

    def rect(self, x: float, y: float, w: float, h: float, **attrs: object) -> None:
        self.add(
            f"<rect x='{x:.1f}' y='{y:.1f}' width='{w:.1f}' height='{h:.1f}' {_attrs(**attrs)}/>"
        )

    def text(self, x: float, y: float, text: str, size: float = 11, **attrs: object) -> None:
        attrs.setdefault("fill", "#222")
        self.add(
            f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size:g}' {_attrs(**attrs)}>"
            f"{html.escape(text)}</text>"
        )

    def group(self, parts: Sequence[str], **attrs: object) -> None:
        self.add(f"<g {_attrs(**attrs)}>" + "".join(parts) + "</g>")

    def vertical_axis(self, x: float, scale: Scale, label: str, side: str = "left",
                      **attrs: object) -> None:  # fmt: skip
        """An axis along x with its ticks and their values, titled ``label`` above it."""
        parts = [f"<line x1='{x:.1f}' y1='{scale.start:.1f}' x2='{x:.1f}' "
                 f"y2='{scale.end:.1f}' stroke='#555'/>"]  # fmt: skip
        sign, anchor = (-1, "end") if side == "left" else (1, "start")
        for y, text in scale.ticks():
            parts.append(f"<line x1='{x:.1f}' y1='{y:.1f}' x2='{x + 4 * sign:.1f}' "
                         f"y2='{y:.1f}' stroke='#555'/>")  # fmt: skip
            parts.append(
                f"<text class='tick' x='{x + 7 * sign:.1f}' y='{y + 3.5:.1f}' font-size='10' "
                f"text-anchor='{anchor}' fill='#333'>{html.escape(text)}</text>"
            )
        self.group(parts, class_="axis", data_axis=label, **attrs)

    def horizontal_axis(self, y: float, scale: Scale, label: str) -> None:
        parts = [f"<line x1='{scale.start:.1f}' y1='{y:.1f}' x2='{scale.end:.1f}' "
                 f"y2='{y:.1f}' stroke='#555'/>"]  # fmt: skip
        for x, text in scale.ticks():
            parts.append(f"<line x1='{x:.1f}' y1='{y:.1f}' x2='{x:.1f}' y2='{y + 4:.1f}' "
                         "stroke='#555'/>")  # fmt: skip
            parts.append(
                f"<text class='tick' x='{x:.1f}' y='{y + 15:.1f}' font-size='10' "
                f"text-anchor='middle' fill='#333'>{html.escape(text)}</text>"
            )
        mid = (scale.start + scale.end) / 2
        parts.append(
            f"<text class='axis-title' x='{mid:.1f}' y='{y + 32:.1f}' font-size='12' "
            f"text-anchor='middle' fill='#222'>{html.escape(label)}</text>"
        )
        self.group(parts, class_="axis", data_axis=label)

    def legend(self, x: float, y: float, entries: Sequence[tuple[str, dict[str, object]]]) -> None:
        """Entries side by side: (label, the sample line's attributes)."""
        parts = []
        for label, attrs in entries:
            style = {"stroke-width": 2, **attrs}
            parts.append(f"<line x1='{x:.1f}' y1='{y:.1f}' x2='{x + 22:.1f}' y2='{y:.1f}' "
                         f"{_attrs(**style)}/>")  # fmt: skip
            parts.append(
                f"<text x='{x + 27:.1f}' y='{y + 4:.1f}' font-size='11' fill='#222'>"
                f"{html.escape(label)}</text>"
            )
            x += 40 + 6.5 * len(label)
        self.group(parts, class_="legend")

    def render(self) -> str:
        head = (
            f"<svg xmlns='http://www.w3.org/2000/svg' width='{self.width}' height='{self.height}' "
            f"viewBox='0 0 {self.width} {self.height}' {FONT} role='img'>"
        )
        title = f"<title>{html.escape(self.title)}</title>" if self.title else ""
        background = f"<rect width='{self.width}' height='{self.height}' fill='white'/>"
        heading = (
            f"<text x='{self.width / 2:.1f}' y='20' font-size='14' font-weight='600' "
            f"text-anchor='middle' fill='#222'>{html.escape(self.title)}</text>"
            if self.title
            else ""
        )
        return head + title + background + heading + "".join(self.parts) + "</svg>\n"
