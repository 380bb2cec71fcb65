"""engine.ledger: settled trials summed up once, checked against the world at every plan."""

from __future__ import annotations

from dataclasses import replace

from tests.factories import World, experiment_doc, running_view, succeed_scored
from trialforge.api import load_experiment
from trialforge.engine.planner import Planner


def spec() -> object:
    return load_experiment(
        experiment_doc(search={"algorithm": "random", "seed": 5},
                       budget={"maxTrials": 40, "parallelism": 3})
    ).spec  # fmt: skip


class Copying(World):
    """A world that hands the planner equal but new objects every time (as a cache that
    rebuilds its records would): the ledger's slower path, which compares them."""

    def step(self, end=None, **kw):  # type: ignore[no-untyped-def]
        self.views = {k: replace(v) for k, v in self.views.items()}
        return super().step(end, **kw)


def test_the_same_objects_and_equal_copies_give_the_same_plans() -> None:
    same, copies = World(Planner(spec(), "x")), Copying(Planner(spec(), "x"))
    for _ in range(60):
        a, b = same.step(succeed_scored), copies.step(succeed_scored)
        assert a == b
        if a.finished is not None:
            break
    assert a.finished is not None and a.counts["succeeded"] == 40
    # Both found the settled trials unchanged: neither ledger was cleared on the way.
    assert len(same.planner._ledger.indices) == len(copies.planner._ledger.indices) > 30


def test_a_settled_trial_that_changed_clears_the_ledger_and_is_read_again() -> None:
    world = World(Planner(spec(), "x"))
    for _ in range(20):
        world.step(succeed_scored)
    ledger = world.planner._ledger
    assert ledger.indices
    name = next(iter(ledger.views))
    # The same trial, now with another value (a status rewritten by hand, say).
    world.views[name] = replace(world.views[name], values=(123.0,))
    world.step()
    rebuilt = world.planner._ledger
    assert rebuilt is not ledger  # rebuilt from the whole world, the new value in it
    assert rebuilt.views[name].values == (123.0,) and len(rebuilt.indices) >= len(ledger.indices)


class Omitting(World):
    """A world that leaves out what the planner settled, as the local runtime does."""

    def step(self, end=None, **kw):  # type: ignore[no-untyped-def]
        from trialforge.engine.planner import StartTrial, StopTrial

        planner = self.planner
        given = [v for v in self.views.values() if not planner.settled(v.name)]
        plan = planner.plan(given, now=kw.pop("now", 1_000_000.0), settled_omitted=True, **kw)
        for action in plan.actions:
            if isinstance(action, StartTrial):
                name = f"x-{action.index}" + (f"-r{action.attempt}" if action.attempt else "")
                self.started.append(action)
                self.views[name] = running_view(name, action)
            elif isinstance(action, StopTrial):
                self.views[action.name] = replace(self.views[action.name], phase=action.phase)
        active = [v for v in self.views.values() if v.phase in ("Pending", "Running")]
        if active and end is not None:
            oldest = min(active, key=lambda v: (v.index, v.attempt))
            self.views[oldest.name] = end(oldest)
        self.plan = plan
        return plan


def test_a_world_without_its_settled_trials_gets_the_plans_of_the_whole_world() -> None:
    whole, omitting = World(Planner(spec(), "x")), Omitting(Planner(spec(), "x"))
    handed: list[int] = []
    for _ in range(60):
        handed.append(sum(not omitting.planner.settled(n) for n in omitting.views))
        a, b = whole.step(succeed_scored), omitting.step(succeed_scored)
        assert a == b
        if a.finished is not None:
            break
    assert a.finished is not None and a.counts["succeeded"] == 40
    # What a plan was handed stayed about the trials in play, not all trials run.
    assert max(handed) <= 8


def test_a_settled_trial_handed_over_again_with_settled_omitted_is_refused() -> None:
    import pytest

    world = World(Planner(spec(), "x"))
    for _ in range(20):
        world.step(succeed_scored)
    with pytest.raises(ValueError, match="needs every trial"):
        world.planner.plan(list(world.views.values()), now=1.0, settled_omitted=True)
