"""engine/space.py: distributions, the grid, and a conditional space's valid configurations."""

from __future__ import annotations

from tests.factories import experiment_doc
from trialforge.api import load_experiment
from trialforge.engine import space

TRIAL = {"template": {"spec": {"containers": [{"name": "t", "image": "i", "command": ["t"]}]}}}


def test_a_conditional_grid_branches_only_where_a_parameter_is_active() -> None:
    spec = load_experiment(
        experiment_doc(
            trial=TRIAL,
            parameters=[
                {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
                {"name": "nesterov", "type": "categorical", "values": [True, False],
                 "when": {"opt": ["sgd"]}},
                {"name": "dampening", "type": "discrete", "values": [0, 0.1],
                 "when": {"nesterov": [False]}},
            ],
        )
    ).spec  # fmt: skip
    points = space.conditional_grid(spec)
    assert points == [
        {"opt": "sgd", "nesterov": True},
        {"opt": "sgd", "nesterov": False, "dampening": 0},
        {"opt": "sgd", "nesterov": False, "dampening": 0.1},
        {"opt": "adam"},
    ]


def test_point_keys_tell_booleans_from_numbers_but_not_ints_from_floats() -> None:
    assert space.point_key({"a": 1}) != space.point_key({"a": True})
    assert space.point_key({"a": 1}) == space.point_key({"a": 1.0})
    assert space.point_key({"a": 1, "b": "x"}) == space.point_key({"b": "x", "a": 1})
