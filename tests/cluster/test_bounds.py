"""Bounded objects against the real API server (issue 19, item 3).

The status an Experiment of 10,000 trials carries at its widest (every trial on
the Pareto front, every configuration compared against the baseline, 64
parameters with 63-character names), built by the real status builder, is
written through the status subresource and read back whole: the CRD's schema
keeps the bounded fields, and the stored object stays far below etcd's 1.5 MiB.
Likewise a Trial whose trainer reported 500 metrics over 10,000 steps.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from clusterlib import KubeCluster

# Cluster tests run with tests/cluster on the path only; the widest status is the
# unit test's, built once.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.unit.test_engine_status import ETCD_LIMIT, wide_doc, widest_status

pytestmark = pytest.mark.cluster

GROUP, VERSION = "trialforge.io", "v1alpha1"


def custom(cluster: KubeCluster) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(cluster.api_client)


def stored_size(obj: dict[str, Any]) -> int:
    return len(json.dumps(obj, separators=(",", ":")))


def test_the_status_of_10000_trials_is_stored_whole_and_far_below_etcds_limit(
    cluster: KubeCluster, namespace: str
) -> None:
    from trialforge.api.status import MAX_PARETO_FRONT

    api = custom(cluster)
    doc = wide_doc() | {"metadata": {"name": "wide"}}
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "experiments", doc)
    _, status = widest_status(10_000)
    wire = status.to_wire()
    api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "experiments", "wide", {"status": wire}
    )
    stored = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "experiments", "wide")
    got = stored["status"]
    # Nothing pruned by the schema: the bounded front, its size, every comparison row.
    assert got["paretoFrontSize"] == 10_000 and len(got["paretoFront"]) == MAX_PARETO_FRONT
    assert got["paretoFront"] == wire["paretoFront"]
    assert got["comparison"] == wire["comparison"]
    assert got["trials"]["total"] == 10_000
    # The whole object, spec and metadata included: under a third of etcd's limit.
    assert stored_size(stored) < ETCD_LIMIT / 3, stored_size(stored)


def test_a_trial_that_reported_500_metrics_over_10000_steps_stays_bounded(
    cluster: KubeCluster, namespace: str
) -> None:
    from trialforge.api.observation import Observation
    from trialforge.api.status import MAX_HISTORY_POINTS, MAX_TRIAL_METRICS
    from trialforge.engine import history

    api = custom(cluster)
    trial = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Trial",
        "metadata": {"name": "wide-0"},
        "spec": {"experiment": "wide", "index": 0, "parameters": {"lr": 0.1}, "seed": 1},
    }
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "trials", trial)
    directions = {"loss": "minimize"}
    names = ["loss"] + [f"metric_{i:03d}_" + "x" * 50 for i in range(500)]
    points: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for start in range(0, 10_000, 1000):
        # As the ingest stores each batch: merged into the bounded history.
        batch = [
            Observation(s, {n: (s * 0.000123456789 + i) for i, n in enumerate(names)}, 1.7e9 + s)
            for s in range(start, start + 1000)
        ]
        points = history.merge(points, batch, directions)
        summary = history.summarize(summary, batch, directions)
    status = {"phase": "Running", "history": points, "metrics": summary, "lastSequence": 10_000}
    api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "trials", "wide-0", {"status": status}
    )
    stored = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "trials", "wide-0")
    got = stored["status"]
    assert list(got["history"]) == names[: MAX_TRIAL_METRICS + 1]
    assert all(len(p) == MAX_HISTORY_POINTS for p in got["history"].values())
    assert got["metrics"]["loss"]["count"] == 10_000
    assert stored_size(stored) < ETCD_LIMIT / 4, stored_size(stored)
