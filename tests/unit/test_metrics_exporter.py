"""The Prometheus exporter (metrics/exporter.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import generate_latest

from trialforge.metrics import exporter

REQUIRED = [
    "trialforge_trials",
    "trialforge_experiment_best_objective",
    "trialforge_experiment_gpu_seconds",
    "trialforge_running_gpus",
    "trialforge_trial_metric",
    "trialforge_trial_metric_series_dropped_total",
    "trialforge_observations_ingested_total",
    "trialforge_observations_rejected_total",
    "trialforge_ingest_request_duration_seconds_bucket",
    "trialforge_reconcile_duration_seconds_bucket",
    "trialforge_reconcile_errors_total",
    "trialforge_suggestion_duration_seconds_bucket",
    "trialforge_status_patches_total",
    "trialforge_api_writes_total",
    "trialforge_leader",
]


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    exporter.reset()
    exporter.set_series_limit(exporter.DEFAULT_SERIES_LIMIT)
    yield
    exporter.reset()
    exporter.set_series_limit(exporter.DEFAULT_SERIES_LIMIT)


def value(name: str, **labels: str) -> float | None:
    return exporter.REGISTRY.get_sample_value(name, labels)


def trial(name: str, phase: str, **metrics: float) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {"phase": phase, "metrics": {k: {"latest": v} for k, v in metrics.items()}},
    }


def test_every_name_the_dashboard_uses_is_in_the_registry() -> None:
    names = exporter.exported_names()
    assert set(REQUIRED) <= set(names), sorted(set(REQUIRED) - set(names))
    assert all(n.startswith("trialforge_") for n in names)


def observe(trials: list[dict[str, Any]], ns: str = "ml", xp: str = "mnist", **kw: Any) -> None:
    args = {"best": 0.1, "gpu_seconds": 12.5, "gpus_per_trial": 2} | kw
    exporter.observe_experiment(ns, xp, trials, **args)


def test_series_follow_the_trials_and_vanish_with_them() -> None:
    observe([trial("a", "Running", loss=0.5, acc=0.8), trial("b", "Pending")])
    assert value("trialforge_trials", namespace="ml", experiment="mnist", phase="Running") == 1
    assert value("trialforge_trials", namespace="ml", experiment="mnist", phase="Pending") == 1
    assert value("trialforge_trials", namespace="ml", experiment="mnist", phase="Pruned") == 0
    assert value("trialforge_running_gpus", namespace="ml", experiment="mnist") == 2
    assert value("trialforge_experiment_gpu_seconds", namespace="ml", experiment="mnist") == 12.5
    assert value("trialforge_experiment_best_objective", namespace="ml", experiment="mnist") == 0.1
    labels = {"namespace": "ml", "experiment": "mnist", "trial": "a"}
    assert value("trialforge_trial_metric", **labels, metric="loss") == 0.5
    # The trial goes on, then ends: its series follow, then go.
    observe([trial("a", "Running", loss=0.25, acc=0.9), trial("b", "Running", loss=1.0)])
    assert value("trialforge_trial_metric", **labels, metric="loss") == 0.25
    observe([trial("a", "Pruned", loss=0.25), trial("b", "Running", loss=0.5)])
    assert value("trialforge_trial_metric", **labels, metric="loss") is None
    assert value("trialforge_trial_metric", **labels, metric="acc") is None
    b = {"namespace": "ml", "experiment": "mnist", "trial": "b", "metric": "loss"}
    assert value("trialforge_trial_metric", **b) == 0.5
    observe([])  # deleted trials
    assert value("trialforge_trial_metric", **b) is None
    assert exporter.series_count() == 0


def test_the_experiment_phase_is_one_series_per_phase_with_the_current_one_at_1() -> None:
    observe([trial("a", "Running", loss=0.5)], experiment_phase="Running")
    assert value("trialforge_experiment_phase", namespace="ml", experiment="mnist",
                 phase="Running") == 1  # fmt: skip
    observe([trial("a", "Failed")], experiment_phase="Failed")
    at = {
        p: value("trialforge_experiment_phase", namespace="ml", experiment="mnist", phase=p)
        for p in exporter.EXPERIMENT_PHASES
    }
    assert at == {"Pending": 0, "Running": 0, "Suspended": 0, "Succeeded": 0, "Failed": 1}


def test_a_deleted_experiment_loses_every_series() -> None:
    observe([trial("a", "Running", loss=0.5)], experiment_phase="Running")
    observe([trial("x", "Running", loss=0.5)], xp="other")
    exporter.forget_experiment("ml", "mnist")
    text = generate_latest(exporter.REGISTRY).decode()
    assert 'experiment="mnist"' not in text
    assert 'experiment="other"' in text


def test_the_series_cap_drops_and_counts_each_series_once() -> None:
    exporter.set_series_limit(3)
    before = value("trialforge_trial_metric_series_dropped_total") or 0
    running = [trial(f"t{i}", "Running", loss=i, acc=i) for i in range(3)]  # 6 series
    observe(running)
    observe(running)  # observed again: the same dropped series are not counted twice
    assert exporter.series_count() == 3
    assert value("trialforge_trial_metric_series_dropped_total") == before + 3
    # Trials end: room again for the others.
    observe([trial("t0", "Succeeded"), trial("t1", "Succeeded"), running[2]])
    assert exporter.series_count() == 2


def test_suggestions_are_timed_without_touching_the_engine() -> None:
    class Search:
        def suggest(self, index: int) -> int:
            return index * 2

    search = Search()
    exporter.timed_suggestions(search)
    exporter.timed_suggestions(search)  # idempotent
    before = value("trialforge_suggestion_duration_seconds_count") or 0
    assert search.suggest(4) == 8
    assert value("trialforge_suggestion_duration_seconds_count") == before + 1


def test_gpus_per_pod_reads_limits_or_requests() -> None:
    template = {
        "spec": {
            "containers": [
                {"resources": {"limits": {"nvidia.com/gpu": "2"}}},
                {"resources": {"requests": {"nvidia.com/gpu": 1}}},
                {"resources": {}},
            ]
        }
    }
    assert exporter.gpus_per_pod(template) == 3


# -- the bounded history -------------------------------------------------------------------------
