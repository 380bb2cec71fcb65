"""engine/history.py: the bounded metric history a Trial's status keeps."""

from __future__ import annotations

from typing import Any

from trialforge.api.observation import Observation
from trialforge.engine import history


def feed(batches: int, per: int, tails: dict[str, int] | None = None) -> dict[str, Any]:
    h: dict[str, Any] = {}
    step = 0
    for _ in range(batches):
        obs = []
        for _ in range(per):
            loss = 1.0 / (step + 1) if step != 1234 else 0.0001  # a best point mid-way
            obs.append(Observation(step, {"loss": loss, "lr": 0.1}))
            step += 1
        h = history.merge(h, obs, {"loss": "minimize"}, tails=tails)
    return h


def test_history_keeps_first_last_best_and_evenly_spaced_points() -> None:
    h = feed(batches=200, per=25)  # 5000 steps, merged 200 times
    for metric in ("loss", "lr"):
        assert len(h[metric]) == 100
        steps = [p["step"] for p in h[metric]]
        assert steps[0] == 0 and steps[-1] == 4999 and steps == sorted(steps)
    assert 1234 in [p["step"] for p in h["loss"]]  # the best point
    gaps = [
        b - a
        for a, b in zip(
            [p["step"] for p in h["lr"]], [p["step"] for p in h["lr"]][1:], strict=False
        )
    ]
    ideal = 4999 / 99
    assert max(gaps) < 2.5 * ideal  # spread over the whole run, not crowded at its end


def test_history_keeps_the_last_k_points_for_a_mean_of_the_last_k() -> None:
    h = feed(batches=100, per=30, tails={"loss": 10})
    assert [p["step"] for p in h["loss"]][-10:] == list(range(2990, 3000))
    assert len(h["loss"]) == 100


def test_non_finite_points_are_kept_but_never_push_out_the_last() -> None:
    obs = [Observation(s, {"loss": float("nan")}) for s in range(300)]
    h = history.merge({}, obs, {"loss": "minimize"})
    assert len(h["loss"]) == 100
    assert h["loss"][0]["step"] == 0 and h["loss"][-1]["step"] == 299
