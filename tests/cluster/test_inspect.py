"""`trialforge list`, `status` and `logs` against the real local control plane (issue 20).

The operator runs as a real subprocess and kwok plays the nodes; the CLI runs as a
user runs it (a subprocess with --kubeconfig). kwok pods have no logs, so `logs`
is tested here for what a cluster decides: a trial whose pod is gone prints the
last lines kept in its status, a trial with neither says so; the local path with
real output is in tests/unit/test_reporting_inspect_commands.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from clusterlib import KubeCluster
from operatorlib import GROUP, VERSION, Cluster, OperatorProcess, Reporter, experiment

pytestmark = pytest.mark.cluster


def tf(cluster: KubeCluster, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trialforge.cli", *args, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def curve(trial: dict[str, Any]) -> list[tuple[int, dict[str, float]]]:
    x = float(trial["spec"]["parameters"]["x"])
    return [(1, {"loss": x + 1}), (2, {"loss": x})]


def labelled(name: str, labels: dict[str, str], **kwargs: Any) -> dict[str, Any]:
    xp = experiment(name, **kwargs)
    xp["metadata"]["labels"] = labels
    xp["metadata"]["annotations"] = {"trialforge.io/description": f"{name}: a test sweep"}
    return xp


def test_list_and_status_read_experiments_labels_and_holds_from_the_cluster(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    kube.create(labelled("vision", {"team": "vision"}, max_trials=2, run_seconds="1"))
    stuck = labelled("stuck", {"team": "nlp"}, max_trials=2, parallelism=1)
    # No node has this label: the scheduler leaves the pod Pending, Unschedulable.
    stuck["spec"]["trial"]["template"]["spec"]["nodeSelector"] = {"type": "nowhere"}
    kube.create(stuck)
    with Reporter(cluster, namespace, operator.port, curve):
        done = kube.until(lambda: kube.finished("vision"), 120, "vision to finish")
    assert done["phase"] == "Succeeded"
    kube.until(
        lambda: any(
            (t.get("status") or {}).get("reason") == "Unschedulable" for t in kube.trials("stuck")
        ),
        60,
        "the stuck trial to be Unschedulable",
    )

    listed = tf(cluster, "list", "-n", namespace, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {e["name"]: e for e in json.loads(listed.stdout)["experiments"]}
    assert set(rows) == {"vision", "stuck"}
    assert rows["vision"]["phase"] == "Succeeded" and rows["vision"]["done"] == 2
    assert rows["vision"]["max"] == 2 and rows["vision"]["namespace"] == namespace
    assert rows["vision"]["best"] == done["bestValue"]
    assert rows["vision"]["labels"] == {"team": "vision"}
    assert rows["vision"]["description"] == "vision: a test sweep"
    assert rows["stuck"]["done"] == 0

    # The API server selects by label; the phase filter is ours.
    picked = tf(cluster, "list", "-n", namespace, "-l", "team=vision", "-o", "json")
    assert [e["name"] for e in json.loads(picked.stdout)["experiments"]] == ["vision"]
    not_nlp = tf(cluster, "list", "-n", namespace, "-l", "team notin (nlp)", "--json")
    assert [e["name"] for e in json.loads(not_nlp.stdout)["experiments"]] == ["vision"]
    running = tf(cluster, "list", "-n", namespace, "--phase", "succeeded", "--json")
    assert [e["name"] for e in json.loads(running.stdout)["experiments"]] == ["vision"]
    everywhere = tf(cluster, "list", "-A")
    assert everywhere.returncode == 0, everywhere.stderr
    assert everywhere.stdout.splitlines()[0].split()[:3] == ["NAMESPACE", "NAME", "PHASE"]
    assert any(line.split()[:2] == [namespace, "vision"] for line in everywhere.stdout.splitlines())

    status = tf(cluster, "status", "stuck", "-n", namespace, "--json")
    assert status.returncode == 0, status.stderr
    detail = json.loads(status.stdout)
    assert detail["name"] == "stuck" and detail["counts"]["total"] >= 1
    assert any("stuck-0: Unschedulable" in h for h in detail["holds"]), detail["holds"]
    assert {c["type"] for c in detail["conditions"]} >= {"SpecValid"}
    text = tf(cluster, "status", "vision", "-n", namespace).stdout
    assert f"experiment vision (namespace {namespace})" in text
    assert f"best:        {done['best']['trial']}" in text

    missing = tf(cluster, "status", "nope", "-n", namespace)
    assert missing.returncode == 1 and f"no Experiment {namespace}/nope" in missing.stderr
    assert "Traceback" not in missing.stderr and missing.stdout == ""


def test_unreachable_cluster_is_exit_3_without_a_traceback(
    cluster: KubeCluster, tmp_path: Any
) -> None:
    config = json.loads(
        cluster.kubectl("config", "view", "--raw", "-o", "json").stdout  # a copy to break
    )
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"  # nothing listens
    broken = tmp_path / "kubeconfig"
    broken.write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "-m", "trialforge.cli", "list", "--kubeconfig", str(broken), "-A"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    assert "cannot reach the cluster" in done.stderr and "Traceback" not in done.stderr


def _trial(namespace: str, name: str, experiment_name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Trial",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {f"{GROUP}/experiment": experiment_name, f"{GROUP}/trial": name},
        },
        "spec": {"experiment": experiment_name, "index": 0, "parameters": {"x": 0.5}, "seed": 1},
    }


def test_logs_of_a_trial_whose_pod_is_gone_print_the_tail_kept_in_its_status(
    cluster: KubeCluster, namespace: str
) -> None:
    """No operator here: the Trials are written as the operator writes them when a
    trial ends (status.logTail), and no pod exists, as after a pruned trial's Job
    was deleted."""
    kube = Cluster(cluster, namespace, None)
    kube.create(experiment("gone", max_trials=2))
    kept = [f"epoch {i} loss={1 / (i + 1):.3f}" for i in range(5)] + ["pruned at step 5"]
    for name in ("gone-0", "gone-1"):
        kube.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "trials", _trial(namespace, name, "gone")
        )
    kube.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "trials", "gone-0",
        {"status": {"phase": "Pruned", "reason": "Pruned", "logTail": kept}},
    )  # fmt: skip
    kube.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "trials", "gone-1", {"status": {"phase": "Cancelled"}}
    )
    # The API server stored the field (the CRD's schema has it; an unknown one is pruned).
    assert kube.trial("gone-0")["status"]["logTail"] == kept

    for follow in ((), ("-f",)):
        done = tf(cluster, "logs", "gone-0", "-n", namespace, *follow)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "".join(f"{line}\n" for line in kept)
        assert "status.logTail of Trial" in done.stderr
    tail = tf(cluster, "logs", "gone-0", "-n", namespace, "--tail", "2")
    assert tail.stdout == "epoch 4 loss=0.200\npruned at step 5\n"

    nothing = tf(cluster, "logs", "gone-1", "-n", namespace)
    assert nothing.returncode == 1 and nothing.stdout == ""
    assert "no log for Trial" in nothing.stderr and "its pod is gone" in nothing.stderr
    missing = tf(cluster, "logs", "gone-7", "-n", namespace, "-f")
    assert missing.returncode == 1 and f"no Trial {namespace}/gone-7" in missing.stderr
    assert "Traceback" not in missing.stderr + nothing.stderr


def test_logs_of_a_kwok_pod_say_why_it_cannot_be_read(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    """A kwok node has no kubelet to serve logs: the API server's error is said, with the
    pod's name, and exit 1; the operator, whose read of the tail fails the same way when
    the trial ends, keeps no tail and goes on (the trial still concludes)."""
    kube.create(experiment("kwoklog", max_trials=1, run_seconds="15"))
    kube.until(
        lambda: any(p.status.phase == "Running" for p in kube.pods("kwoklog")), 60, "a running pod"
    )
    done = tf(cluster, "logs", "kwoklog-0", "-n", namespace, "-f")
    assert done.returncode == 1 and done.stdout == ""
    assert "the log of pod kwoklog-0-" in done.stderr and "cannot be read" in done.stderr
    assert "Traceback" not in done.stderr
    kube.until(lambda: kube.finished("kwoklog"), 90, "kwoklog to finish")
    status = kube.trial("kwoklog-0")["status"]
    assert status["phase"] in ("Succeeded", "Failed") and "logTail" not in status
