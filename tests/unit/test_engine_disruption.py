"""engine/disruption.py: disruption is not failure (issue 22, item 1).

The rule both runtimes follow: a disrupted run makes the same trial run again,
counted apart, never as a failure or a retry, until spec.trial.maxDisruptions.
"""

from __future__ import annotations

import signal
from dataclasses import replace

import pytest

from tests.factories import NOW, World, experiment_doc, succeed_scored
from trialforge.api import load_experiment
from trialforge.api.experiment import DEFAULT_MAX_DISRUPTIONS, ExperimentSpec
from trialforge.api.observation import Observation
from trialforge.engine.disruption import (
    HISTORY_LIMIT,
    TOO_MANY,
    Disruption,
    Reason,
    counted,
    disrupted,
    local_disruption,
)
from trialforge.engine.history import by_step, continued, merge
from trialforge.engine.planner import Planner
from trialforge.engine.record import TrialRecord

TRIAL = experiment_doc()["spec"]["trial"]


def spec_of(**trial: object) -> ExperimentSpec:
    doc = experiment_doc(
        budget={"maxTrials": 3, "parallelism": 3, "maxFailedTrials": 0},
        trial={**TRIAL, **trial},
    )
    return load_experiment(doc).spec


def evicted(run: str, gpu: float | None = None) -> Disruption:
    return Disruption(Reason.EVICTED, "evicted through the Eviction API", run, "n1", gpu)


def test_a_disrupted_run_leaves_the_trial_pending_with_the_disruption_counted() -> None:
    out = disrupted(spec_of(), {"phase": "Running"}, evicted("pod-a"), NOW)
    assert out["phase"] == "Pending"
    assert out["reason"] == "Evicted"
    assert out["disruptions"] == 1
    assert "not a failure" in out["message"]
    assert out["disruptionHistory"] == [
        {
            "reason": "Evicted",
            "message": "evicted through the Eviction API",
            "time": "1970-01-12T13:46:40Z",
            "run": "pod-a",
            "node": "n1",
        }
    ]
    assert "retryable" not in out and "completionTime" not in out


def test_the_same_run_is_counted_once() -> None:
    spec = spec_of()
    status = disrupted(spec, {}, evicted("pod-a"), NOW)
    assert counted(status, "pod-a")
    assert disrupted(spec, status, evicted("pod-a"), NOW + 5) == {}
    again = disrupted(spec, status, evicted("pod-b"), NOW + 5)
    assert again["disruptions"] == 2
    assert [d["run"] for d in again["disruptionHistory"]] == ["pod-a", "pod-b"]


def test_past_max_disruptions_the_trial_fails_for_good() -> None:
    spec = spec_of(maxDisruptions=1)
    first = disrupted(spec, {}, evicted("pod-a"), NOW)
    assert first["phase"] == "Pending"
    second = disrupted(spec, first, evicted("pod-b"), NOW)
    assert second["phase"] == "Failed"
    assert second["reason"] == TOO_MANY
    assert second["retryable"] is False
    assert "maxDisruptions (1)" in second["message"]
    assert second["completionTime"]


def test_the_default_limit_is_generous_and_documented() -> None:
    assert spec_of().trial.max_disruptions == DEFAULT_MAX_DISRUPTIONS >= 5


def test_the_history_is_bounded_and_the_count_is_not() -> None:
    spec = spec_of(maxDisruptions=1000)
    status: dict = {}
    for i in range(HISTORY_LIMIT + 5):
        status = {**status, **disrupted(spec, status, evicted(f"pod-{i}"), NOW + i)}
    assert status["disruptions"] == HISTORY_LIMIT + 5
    assert len(status["disruptionHistory"]) == HISTORY_LIMIT
    assert status["disruptionHistory"][-1]["run"] == f"pod-{HISTORY_LIMIT + 4}"


def test_the_disrupted_run_s_gpu_time_is_added() -> None:
    out = disrupted(spec_of(), {"gpuSeconds": 10.0}, evicted("p", gpu=2.5), NOW)
    assert out["gpuSeconds"] == 12.5


@pytest.mark.parametrize(
    ("exit_code", "stopped_by", "disruption"),
    [
        (-signal.SIGTERM, None, True),  # killed by SIGTERM from outside
        (128 + signal.SIGTERM, None, True),  # caught it, saved, exited as a shell does
        (-signal.SIGINT, None, True),
        (-signal.SIGHUP, None, True),
        (-signal.SIGKILL, None, False),  # the OOM killer's signal: a failure
        (128 + signal.SIGKILL, None, False),
        (1, None, False),
        (0, None, False),
        (-signal.SIGTERM, "Pruned", False),  # the planner stopped it
        (-signal.SIGTERM, "Timeout", False),
        (-signal.SIGTERM, "Interrupted", True),  # the runner's own stop
        (0, "Interrupted", True),
    ],
)
def test_the_local_rule(exit_code: int, stopped_by: str | None, disruption: bool) -> None:
    found = local_disruption(exit_code, stopped_by, "t-0", 2)
    assert (found is not None) == disruption
    if found is not None:
        assert found.reason == Reason.INTERRUPTED
        assert found.run == "t-0#2"


def _disrupt(view: TrialRecord, spec: ExperimentSpec, run: str) -> TrialRecord:
    return view.with_status(disrupted(spec, view.disruption_status(), evicted(run), NOW))


def test_disrupted_trials_count_neither_as_failures_nor_as_retries() -> None:
    """maxFailedTrials 0, retries 0: every trial disrupted once, the experiment succeeds."""
    spec = spec_of()
    planner = Planner(spec, "x")
    world = World(planner)
    disrupted_once: set[str] = set()

    def end(view: TrialRecord) -> TrialRecord:
        if view.name not in disrupted_once:
            disrupted_once.add(view.name)
            return _disrupt(view, spec, f"{view.name}-pod-0")
        return succeed_scored(view)

    plan = world.run(end)
    assert plan.finished.phase == "Succeeded", plan.finished
    assert disrupted_once == {"x-0", "x-1", "x-2"}
    # Each ran again as the same trial: no new attempt, no retry, no failure.
    assert [(a.index, a.attempt, a.why) for a in world.started] == [(0, 0, "new"), (1, 0, "new"),
                                                                     (2, 0, "new")]  # fmt: skip
    assert plan.counts["failed"] == 0 and plan.counts["retried"] == 0
    assert plan.counts["disruptions"] == 3
    assert all(v.disruptions == 1 for v in world.views.values())


def test_a_trial_disrupted_too_often_fails_and_counts_as_a_failure() -> None:
    spec = spec_of(maxDisruptions=0)
    planner = Planner(spec, "x")
    world = World(planner)
    plan = world.run(lambda v: _disrupt(v, spec, f"{v.name}-pod"))
    assert plan.finished.phase == "Failed"
    assert plan.finished.reason == "TooManyFailures"
    assert {v.reason for v in world.views.values() if v.phase == "Failed"} == {TOO_MANY}
    # Not retryable: no new attempt was started for a trial disrupted forever.
    assert all(a.attempt == 0 for a in world.started)


def test_retries_stay_for_real_failures_after_disruptions() -> None:
    spec = spec_of(retries=1)
    planner = Planner(spec, "x")
    view = TrialRecord("x-0", 0, 0, "Running", {"lr": 0.01, "opt": "sgd", "layers": 1})
    view = _disrupt(_disrupt(view, spec, "pod-a"), spec, "pod-b")
    failed = replace(view, phase="Failed", reason="Error")
    plan = planner.plan([failed], now=NOW)
    retries = [a for a in plan.actions if getattr(a, "why", None) == "retry"]
    assert [(a.index, a.attempt) for a in retries] == [(0, 1)]


def test_a_resumed_history_repeats_no_step() -> None:
    """A run after a disruption reports again from its checkpoint: its points supersede
    the earlier run's from there on, and no step is repeated."""
    first = [Observation(s, {"loss": 1.0 / (s + 1)}) for s in range(6)]
    history = merge({}, first, {"loss": "minimize"})
    # Resumed from the checkpoint at step 3: steps 4 and 5 come again, then 6 and 7.
    second = [Observation(s, {"loss": 0.5 / (s + 1)}) for s in range(4, 8)]
    resumed = merge(history, second, {"loss": "minimize"})
    assert [p["step"] for p in resumed["loss"]] == list(range(8))
    assert by_step(resumed["loss"])[5] == pytest.approx(0.5 / 6)
    assert by_step(resumed["loss"])[3] == pytest.approx(1.0 / 4)
    combined = continued(first + second)
    assert [o.step for o in combined] == list(range(8))
    assert combined[5].metrics["loss"] == pytest.approx(0.5 / 6)
    # Without a checkpoint the next run starts over: the old run's later steps go.
    restart = [Observation(s, {"loss": 9.0}) for s in range(2)]
    assert [p["step"] for p in merge(history, restart, {"loss": "minimize"})["loss"]] == [0, 1]
    assert [o.step for o in continued(first + restart)] == [0, 1]
    # Two metrics at one step stay one observation.
    same = [Observation(1, {"loss": 1.0}), Observation(1, {"acc": 0.5})]
    assert continued(same) == [Observation(1, {"loss": 1.0, "acc": 0.5})]
