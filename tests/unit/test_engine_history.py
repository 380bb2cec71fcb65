"""engine.history: the bounded history both runtimes keep, and what the pruner hears of it.

The rule (one for both runtimes): the pruner hears a trial's objective as the
trial's bounded history holds it.  The ingest merges each batch a collector
sends into the Trial's status history; the local runtime merges each round's
new observations into the same history (engine.history.merge_metric).  While a
trial has reported at most MAX_HISTORY_POINTS values the history holds every
one; after that the first, the best, the latest and evenly spaced points.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from tests.factories import NOW, experiment_doc, running_view
from trialforge.api import load_experiment
from trialforge.api.observation import Observation
from trialforge.api.status import MAX_HISTORY_POINTS
from trialforge.engine import history
from trialforge.engine.history import by_step, merge, merge_metric, rules
from trialforge.engine.planner import Planner, StartTrial, StopTrial
from trialforge.engine.record import TrialRecord, trial_spec

METRIC = "loss"


def spec(**overrides: Any) -> Any:
    fields = {
        "objective": {"metric": METRIC, "direction": "minimize"},
        "search": {"algorithm": "random", "seed": 3},
        "earlyStopping": {"algorithm": "median", "settings": {"nStartupTrials": 2}},
        "budget": {"maxTrials": 6, "parallelism": 1},
        **overrides,
    }
    return load_experiment(experiment_doc(**fields)).spec


def stream(n: int, seed: int = 0) -> list[Observation]:
    rng = random.Random(seed)
    return [Observation(s, {METRIC: 1 / (s + 1) + rng.random() / 10, "lr": 0.1}) for s in range(n)]


def batches(items: list[Observation], rng: random.Random) -> list[list[Observation]]:
    out, i = [], 0
    while i < len(items):
        k = rng.randint(1, 7)
        out.append(items[i : i + k])
        i += k
    return out


def cluster_series(observations: list[Observation], rng: random.Random) -> dict[int, float]:
    """What a cluster's planner hears: the ingest's merges, read from the Trial."""
    directions, tails = rules(spec())
    history: dict[str, Any] = {}
    for batch in batches(observations, rng):
        history = merge(history, batch, directions, tails=tails)
    trial = {"metadata": {"name": "xp-0"}, "spec": {"index": 0, "parameters": {}},
             "status": {"phase": "Running", "history": history}}  # fmt: skip
    return dict(TrialRecord.from_resource(trial, METRIC).intermediate)


def local_series(observations: list[Observation], rng: random.Random) -> dict[int, float]:
    """What a local planner hears: each round's observations merged the same way."""
    directions, tails = rules(spec())
    points: list[Any] = []
    for batch in batches(observations, rng):
        points = merge_metric(points, batch, METRIC, directions, tails)
    return by_step(points)


def test_the_rules_are_the_objectives_directions_and_mean_windows() -> None:
    two = spec(objective=None, earlyStopping={"algorithm": "none"}, objectives=[
        {"metric": "loss", "direction": "minimize", "final": "mean", "window": 4},
        {"metric": "acc", "direction": "maximize"},
    ])  # fmt: skip
    assert rules(two) == ({"loss": "minimize", "acc": "maximize"}, {"loss": 4})


@pytest.mark.parametrize("seed", range(5))
def test_up_to_the_limit_both_runtimes_hear_every_point(seed: int) -> None:
    observations = stream(MAX_HISTORY_POINTS, seed)
    every = {o.step: o.metrics[METRIC] for o in observations}
    rng = random.Random(seed)
    assert cluster_series(observations, rng) == local_series(observations, rng) == every


@pytest.mark.parametrize("seed", range(5))
def test_past_the_limit_both_keep_it_bounded_with_the_first_best_and_latest(seed: int) -> None:
    observations = stream(350, seed)
    best = min(observations, key=lambda o: o.metrics[METRIC]).step
    rng = random.Random(seed)
    for heard in (cluster_series(observations, rng), local_series(observations, rng)):
        assert len(heard) <= MAX_HISTORY_POINTS
        assert {0, best, 349} <= set(heard)


def prunes(series_of: Any) -> list[tuple[str, int]]:
    """Drive a planner through six sequential trials that report 30 steps each, one
    step per plan, with each trial's series heard as ``series_of`` builds it."""
    experiment_spec = spec()
    planner = Planner(experiment_spec, "xp")
    views: dict[str, TrialRecord] = {}
    reported: dict[str, list[Observation]] = {}
    stopped: list[tuple[str, int]] = []
    rng = random.Random(1)
    for _ in range(400):
        plan = planner.plan(list(views.values()), now=NOW)
        if plan.finished is not None:
            return stopped
        for action in plan.actions:
            if isinstance(action, StartTrial):
                name = f"xp-{action.index}"
                views[name] = running_view(name, action)
                reported[name] = []
            elif isinstance(action, StopTrial):
                views[action.name] = replace(views[action.name], phase=action.phase)
                stopped.append((action.name, len(reported[action.name]) - 1))
        running = [v for v in views.values() if v.phase == "Running"]
        if not running:
            continue
        view = running[0]
        seen = reported[view.name]
        if len(seen) == 30:
            views[view.name] = replace(view, phase="Succeeded", values=(seen[-1].metrics[METRIC],))
            continue
        # Trials 2 and 4 learn slowly: the median pruner should stop them.
        slow = 1.0 if view.index in (2, 4) else 0.0
        seen.append(Observation(len(seen), {METRIC: slow + 1 / (len(seen) + 1)}))
        views[view.name] = replace(view, intermediate=series_of(seen, rng))
    raise AssertionError("the experiment never finished")


def test_both_runtimes_prune_the_same_trials_at_the_same_step() -> None:
    on_cluster = prunes(cluster_series)
    locally = prunes(local_series)
    assert on_cluster == locally
    assert [name for name, _ in on_cluster] == ["xp-2", "xp-4"]


def test_a_trial_spec_and_its_history_read_back_as_the_planner_needs() -> None:
    """The Trial the reconcile creates, with the history the ingest stores."""
    record = TrialRecord("xp-0", 0, 0, "Running", {"x": 1.0}, 5)
    history = merge({}, stream(3), rules(spec())[0])
    trial = {"metadata": {"name": "xp-0"}, "spec": trial_spec("xp", record),
             "status": {"phase": "Running", "history": history}}  # fmt: skip
    back = TrialRecord.from_resource(trial, METRIC)
    assert replace(back, intermediate={}) == record
    assert sorted(back.intermediate) == [0, 1, 2]


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


def test_a_trial_keeps_its_objectives_and_the_first_metrics_however_many_it_reports() -> None:
    """The Trial's status stays bounded in metrics as in steps: 500 metrics over 10,000
    steps keep the objective and the first MAX_TRIAL_METRICS others, each bounded."""
    import json

    from trialforge.api.status import MAX_TRIAL_METRICS

    directions = {METRIC: "minimize"}
    names = [f"metric_{i:03d}_" + "x" * 50 for i in range(500)]
    kept: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for start in range(0, 10_000, 500):
        # The objective is first reported late, after the others filled the room.
        batch = [
            Observation(s, {n: float(s % 97) for n in names[: 10 + s // 20]}
                        | ({METRIC: 1.0 / (s + 1)} if s >= 5000 else {}), NOW + s)
            for s in range(start, start + 500)
        ]  # fmt: skip
        kept = merge(kept, batch, directions)
        summary = history.summarize(summary, batch, directions)
    assert list(kept) == list(summary) == [*names[:MAX_TRIAL_METRICS], METRIC]
    assert all(len(points) <= MAX_HISTORY_POINTS for points in kept.values())
    assert summary[METRIC]["best"] == 1.0 / 10_000 and summary[METRIC]["count"] == 5000
    size = len(json.dumps({"history": kept, "metrics": summary}, separators=(",", ":")))
    assert size < 1_572_864 / 4, size  # far below etcd's 1.5 MiB, see docs/scaling.md
