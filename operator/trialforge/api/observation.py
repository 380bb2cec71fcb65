"""One observation: the metrics a trial reported at one step."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Observation:
    """What a trainer reported at one step.

    ``step`` is the trainer's own counter (epoch, iteration); when a line carries
    none, the reader numbers observations in arrival order.  ``time`` is seconds
    since the epoch when known.  ``metrics`` maps metric names to finite or
    non-finite floats: a NaN is kept here so the planner can fail the trial
    with a clear reason instead of silently dropping it.
    """

    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    time: float | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"step": self.step, "metrics": dict(self.metrics)}
        if self.time is not None:
            out["time"] = self.time
        return out

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Observation:
        metrics = data.get("metrics") or {}
        if not isinstance(metrics, dict):
            raise ValueError("observation.metrics must be a mapping")
        t = data.get("time")
        return cls(
            step=int(data["step"]),  # type: ignore[arg-type]
            metrics={str(k): float(v) for k, v in metrics.items()},
            time=None if t is None else float(t),  # type: ignore[arg-type]
        )
