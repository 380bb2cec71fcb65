"""Disruption is not failure, on the real control plane (issue 22, items 1 and 4).

The real operator process, kwok pods that end on schedule, a Reporter thread
playing the collector.  The control plane itself disrupts the pods: the
Eviction API (the apiserver adds DisruptionTarget), a deleted node (the pod
garbage collector).  A node that stops answering (NotReady, the taint manager)
is covered by tests/unit/test_kube_disruption.py only: taking a kwok node's
annotation away did not make it NotReady within 150 s here.  The Job ignores such pods
(podFailurePolicy) and replaces them; the operator counts the disruption and
the trial goes on as the same Trial, never as a failure or a retry.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from clusterlib import KubeCluster, tfcluster
from operatorlib import Cluster, OperatorProcess, Reporter, experiment

pytestmark = pytest.mark.cluster


def curve(trial: dict[str, Any]) -> list[tuple[int, dict[str, float]]]:
    x = float(trial["spec"]["parameters"]["x"])
    return [(1, {"loss": x + 1.0}), (2, {"loss": x})]


def on_nodes(xp: dict[str, Any], label: str) -> dict[str, Any]:
    """The experiment's pods run only on nodes labelled ``trialforge.io/pool=<label>``."""
    xp = copy.deepcopy(xp)
    xp["spec"]["trial"]["template"]["spec"]["nodeSelector"] = {"trialforge.io/pool": label}
    return xp


def add_node(cluster: KubeCluster, name: str, pool: str) -> None:
    node = tfcluster.gpu_node_manifest(name, gpus=8)
    node["metadata"]["labels"]["trialforge.io/pool"] = pool
    cluster.apply(node)
    cluster.kubectl("wait", "--for=condition=Ready", "--timeout=60s", f"node/{name}", timeout=90)


def delete_node(cluster: KubeCluster, name: str) -> None:
    cluster.kubectl("delete", "node", name, "--wait=false", check=False)


def running_pod(kube: Cluster, name: str) -> Any | None:
    for pod in kube.pods(name):
        if pod.status.phase == "Running" and not pod.metadata.deletion_timestamp:
            return pod
    return None


def evict(kube: Cluster, pod: Any) -> None:
    from kubernetes import client

    body = client.V1Eviction(
        metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=kube.ns)
    )
    kube.core.create_namespaced_pod_eviction(pod.metadata.name, kube.ns, body)


def history_steps(trial: dict[str, Any]) -> list[int]:
    return [p["step"] for p in ((trial.get("status") or {}).get("history") or {}).get("loss", [])]


def assert_ran_again_as_the_same_trial(kube: Cluster, name: str, done: dict[str, Any]) -> None:
    kube.check(done["phase"] == "Succeeded", f"status: {done}")
    for trial in kube.trials(name):
        st = trial["status"]
        kube.check(trial["spec"].get("attempt", 0) == 0, f"{trial['metadata']['name']} retried")
        kube.check(st["phase"] == "Succeeded", f"{trial['metadata']['name']}: {st}")
        kube.check(history_steps(trial) == [1, 2], f"history: {st.get('history')}")
    kube.check(done["trials"]["failed"] == 0 and done["trials"]["retried"] == 0, f"{done}")
    kube.check(not kube.events("TrialFailed"), "a TrialFailed event")


def test_an_evicted_trial_pod_reruns_the_trial_as_a_disruption(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    name = "evicted"
    kube.create(experiment(name, max_trials=1, parallelism=1, max_failed=0, run_seconds="4"))
    with Reporter(cluster, namespace, operator.port, curve) as reporter:
        pod = kube.until(lambda: running_pod(kube, name), 40, "the trial's pod running")
        evict(kube, pod)
        trial = kube.until(
            lambda: (t := kube.trial(f"{name}-0")).get("status", {}).get("disruptions") and t,
            30,
            "the trial to count the eviction",
        )
        st = trial["status"]
        (entry,) = st["disruptionHistory"]
        kube.check(entry["reason"] == "Evicted", f"disruption: {entry}")
        kube.check(entry["run"] == pod.metadata.name, f"disruption: {entry}")
        kube.check(st["phase"] in ("Pending", "Running"), f"status: {st}")
        kube.until(
            lambda: (p := running_pod(kube, name)) and p.metadata.name != pod.metadata.name,
            40,
            "the Job's new pod running",
        )
        done = kube.until(lambda: kube.finished(name), 60, "the experiment to finish")
    kube.check(not reporter.errors, f"reporter errors: {reporter.errors}")
    assert_ran_again_as_the_same_trial(kube, name, done)
    kube.check(done["trials"]["disruptions"] == 1, f"counts: {done['trials']}")
    (job,) = kube.jobs(name)
    kube.check(job.status.succeeded == 1 and not job.status.failed, f"job: {job.status}")
    kube.check(len(kube.events("TrialDisrupted")) >= 1, "no TrialDisrupted event")


def test_a_deleted_node_reruns_its_trial_as_node_lost(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    """kwok goes on running a pod whose node is gone until the pod garbage collector
    removes it (after its quarantine, within about a minute): the pods here run until
    deleted, and the test follows the trial into its new pod on the other node."""
    name = "nodelost"
    first, second = f"lost-a-{namespace[-6:]}", f"lost-b-{namespace[-6:]}"
    add_node(cluster, first, namespace)
    add_node(cluster, second, f"spare-{namespace[-6:]}")  # joins the pool once the pod runs
    try:
        xp = on_nodes(
            experiment(name, max_trials=1, max_failed=0, run_seconds="forever"), namespace
        )
        kube.create(xp)
        pod = kube.until(lambda: running_pod(kube, name), 40, "the trial's pod running")
        kube.check(pod.spec.node_name == first, f"the pod runs on {pod.spec.node_name}")
        cluster.kubectl("label", "node", second, f"trialforge.io/pool={namespace}", "--overwrite")
        delete_node(cluster, first)
        trial = kube.until(
            lambda: (t := kube.trial(f"{name}-0")).get("status", {}).get("disruptions") and t,
            150,
            "the trial to count its lost node",
        )
        (entry,) = trial["status"]["disruptionHistory"]
        kube.check(entry["reason"] == "NodeLost", f"disruption: {entry}")
        kube.check(entry["node"] == first and entry["run"] == pod.metadata.name, f"{entry}")
        kube.until(
            lambda: (p := running_pod(kube, name)) and p.spec.node_name == second,
            60,
            "the trial running again on the other node",
        )
        st = kube.until(
            lambda: (s := kube.trial(f"{name}-0")["status"])["phase"] == "Running" and s,
            30,
            "the trial Running again",
        )
        kube.check(st["node"] == second and st["disruptions"] == 1, f"status: {st}")
        kube.check(len(kube.trials(name)) == 1, "a new Trial instead of a new run")
        kube.check(not kube.events("TrialFailed"), "a TrialFailed event")
    finally:
        delete_node(cluster, first)
        delete_node(cluster, second)


def test_max_failed_trials_zero_with_every_trial_disrupted_once_still_succeeds(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    name = "alldisrupted"
    kube.create(experiment(name, max_trials=3, parallelism=3, max_failed=0, run_seconds="5"))
    evicted: set[str] = set()

    def evict_each_once() -> bool:
        for pod in kube.pods(name):
            trial = (pod.metadata.labels or {}).get("trialforge.io/trial")
            if (
                trial not in evicted
                and pod.status.phase == "Running"
                and not pod.metadata.deletion_timestamp
            ):
                evict(kube, pod)
                evicted.add(trial)
        return len(evicted) == 3

    with Reporter(cluster, namespace, operator.port, curve) as reporter:
        kube.until(evict_each_once, 60, "each trial's first pod evicted")
        done = kube.until(lambda: kube.finished(name), 90, "the experiment to finish")
    kube.check(not reporter.errors, f"reporter errors: {reporter.errors}")
    assert_ran_again_as_the_same_trial(kube, name, done)
    trials = kube.trials(name)
    kube.check(len(trials) == 3, f"{len(trials)} trials")
    kube.check(all(t["status"]["disruptions"] == 1 for t in trials), "disruptions per trial")
    kube.check(done["trials"]["disruptions"] == 3, f"counts: {done['trials']}")
