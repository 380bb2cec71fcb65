"""Trials under a real Kueue (issue 22, item 3): admission by quota, Kueue's own
reasons, preemption, and suspendPolicy Pause with a queue.

Kueue v0.17.0's controller manager, built from its Go module like the rest of
the control plane, runs as a local process against the session cluster
(`e2e/cluster up --kueue`: its CRDs, no webhooks; see e2e/README.md). The
operator is the real `trialforge operator` process; pods run on kwok GPU nodes.
Nothing here admits, suspends or unsuspends a Job but Kueue.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clusterlib import CLUSTER_CLI, KubeCluster, tfcluster
from operatorlib import Cluster, OperatorProcess, Reporter, experiment, sampling

pytestmark = pytest.mark.cluster

KUEUE = "kueue.x-k8s.io"
KV = f"{KUEUE}/v1beta2"
FLAVOR = "tf-gpu"
GPU = "nvidia.com/gpu"


def curve(trial: dict[str, Any]) -> list[tuple[int, dict[str, float]]]:
    x = float(trial["spec"]["parameters"]["x"])
    return [(1, {"loss": x + 1.0}), (2, {"loss": x})]


# -- Kueue in the session cluster -----------------------------------------------------


@pytest.fixture(scope="module")
def kueue(cluster: KubeCluster) -> Iterator[None]:
    """Kueue's manager against the session cluster for this module, then stopped."""
    if cluster.external:
        proc = cluster.kubectl("get", "crd", f"clusterqueues.{KUEUE}", check=False)
        if proc.returncode != 0:
            pytest.fail("the external cluster has no Kueue: install Kueue v0.17", pytrace=False)
        yield
        return
    assert cluster.state_dir is not None
    proc = subprocess.run(
        [
            sys.executable, str(CLUSTER_CLI), "--name", cluster.name,
            "--dir", str(cluster.state_dir), "up", "--kueue", "--owner-pid", str(os.getpid()),
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"e2e/cluster up --kueue failed:\n{proc.stderr[-6000:]}", pytrace=False)
    cluster.apply({"apiVersion": KV, "kind": "ResourceFlavor", "metadata": {"name": FLAVOR}})
    cluster.apply(
        {"apiVersion": KV, "kind": "WorkloadPriorityClass", "metadata": {"name": "tf-urgent"},
         "value": 1000, "description": "preempts trials"}
    )  # fmt: skip
    yield
    tfcluster.kueue_down(tfcluster.Cluster(cluster.state_dir, cluster.name))


class KueueView(Cluster):
    """The namespace's reads, with Kueue's objects and log in failure messages."""

    cq = ""

    def diagnostics(self) -> str:
        parts = [super().diagnostics()]
        for args in (
            ("-n", self.ns, "get", "workloads", "-o", "yaml"),
            ("get", "clusterqueue", self.cq, "-o", "yaml"),
        ):
            proc = self.c.kubectl(*args, check=False, timeout=30)
            lines = (proc.stdout + proc.stderr).splitlines()
            parts.append(f"--- kubectl {' '.join(args)} ---\n" + "\n".join(lines[-80:]))
        if self.c.state_dir is not None:
            c = tfcluster.Cluster(self.c.state_dir, self.c.name)
            parts.append("--- kueue log ---\n" + tfcluster.kueue_log(c, 40))
        return "\n".join(parts)


@pytest.fixture
def kq(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kueue: None
) -> Iterator[KueueView]:
    view = KueueView(cluster, namespace, operator)
    view.cq = f"cq-{namespace}"[:63]
    yield view
    cluster.kubectl("delete", "clusterqueue", view.cq, "--wait=false", check=False)


def cluster_queue(kq: KueueView, gpus: int, queues: tuple[str, ...], preempt: bool = False) -> None:
    """A ClusterQueue with `gpus` nvidia.com/gpu, and LocalQueues in the namespace."""
    spec: dict[str, Any] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": kq.ns}},
        "queueingStrategy": "BestEffortFIFO",
        "resourceGroups": [
            {
                "coveredResources": ["cpu", "memory", GPU],
                "flavors": [
                    {
                        "name": FLAVOR,
                        "resources": [
                            {"name": "cpu", "nominalQuota": "100"},
                            {"name": "memory", "nominalQuota": "100Gi"},
                            {"name": GPU, "nominalQuota": str(gpus)},
                        ],
                    }
                ],
            }
        ],
    }
    if preempt:
        spec["preemption"] = {"withinClusterQueue": "LowerPriority"}
    kq.c.apply({"apiVersion": KV, "kind": "ClusterQueue", "metadata": {"name": kq.cq},
                "spec": spec})  # fmt: skip
    kq.c.apply(
        [
            {"apiVersion": KV, "kind": "LocalQueue",
             "metadata": {"name": q, "namespace": kq.ns}, "spec": {"clusterQueue": kq.cq}}
            for q in queues
        ]
    )  # fmt: skip

    def active() -> bool:
        out = kq.c.kubectl("get", "clusterqueue", kq.cq, "-o", "json").stdout
        conds = json.loads(out).get("status", {}).get("conditions") or []
        return any(c["type"] == "Active" and c["status"] == "True" for c in conds)

    kq.until(active, 30, f"ClusterQueue {kq.cq} Active")


def workloads(kq: KueueView) -> list[dict[str, Any]]:
    out = kq.c.kubectl("-n", kq.ns, "get", "workloads", "-o", "json").stdout
    return list(json.loads(out)["items"])


def running_pods(kq: KueueView) -> int:
    return sum(
        1 for p in kq.pods() if p.status.phase == "Running" and not p.metadata.deletion_timestamp
    )


def admitted_jobs(kq: KueueView) -> int:
    """Jobs Kueue let run: unsuspended and not finished."""
    return sum(1 for j in kq.active_jobs() if not j.spec.suspend)


def trial_status(kq: KueueView, experiment_name: str) -> list[dict[str, Any]]:
    return [t.get("status") or {} for t in kq.trials(experiment_name)]


# -- the tests --------------------------------------------------------------------------


def test_two_experiments_in_two_local_queues_share_a_gpu_quota_smaller_than_their_demand(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kq: KueueView
) -> None:
    quota = 2
    cluster_queue(kq, quota, ("team-a", "team-b"))
    # Demand: parallelism 2 + 2 trials of 1 GPU each, on 32 free kwok GPUs: only the
    # ClusterQueue's 2 GPUs hold them back.
    kq.create(experiment("qa", max_trials=4, parallelism=2, run_seconds="2", queue="team-a"))
    kq.create(experiment("qb", max_trials=4, parallelism=2, run_seconds="2", queue="team-b"))
    seen = {"pods": 0, "jobs": 0, "waiting": 0}
    messages: set[str] = set()

    def sample() -> None:
        seen["pods"] = max(seen["pods"], running_pods(kq))
        seen["jobs"] = max(seen["jobs"], admitted_jobs(kq))
        for name in ("qa", "qb"):
            for st in trial_status(kq, name):
                if st.get("reason") == "WaitingForAdmission":
                    seen["waiting"] += 1
                    messages.add(st.get("message") or "")

    with Reporter(cluster, namespace, operator.port, curve) as reporter, sampling(sample, 0.1):
        done_a = kq.until(lambda: kq.finished("qa"), 180, "experiment qa to finish")
        done_b = kq.until(lambda: kq.finished("qb"), 180, "experiment qb to finish")
    kq.check(not reporter.errors, f"reporter errors: {reporter.errors}")
    kq.check(
        done_a["phase"] == "Succeeded" and done_b["phase"] == "Succeeded", f"{done_a} {done_b}"
    )
    for name in ("qa", "qb"):
        trials = kq.trials(name)
        kq.check(len(trials) == 4, f"{name}: {len(trials)} trials")
        kq.check(
            all((t.get("status") or {}).get("phase") == "Succeeded" for t in trials),
            f"{name}: {[t.get('status', {}).get('phase') for t in trials]}",
        )
        kq.check(all(t["spec"].get("attempt", 0) == 0 for t in trials), f"{name}: a retry")
    kq.check(seen["pods"] <= quota, f"{seen['pods']} trial pods ran at once; quota {quota}")
    kq.check(seen["jobs"] <= quota, f"{seen['jobs']} Jobs admitted at once; quota {quota}")
    kq.check(seen["pods"] >= 1, "no trial pod was ever seen running")
    kq.check(seen["waiting"] > 0, "no trial was ever seen waiting for admission")
    quota_words = [m for m in messages if m.startswith("Kueue: ") and GPU in m]
    kq.check(quota_words, f"no trial said why in Kueue's words: {messages}")
    # Every Job went through Kueue: one Workload each, all finished.
    wls = workloads(kq)
    kq.check(len(wls) == 8, f"{len(wls)} Workloads for 8 Jobs")
    finished = [
        w for w in wls
        if any(c["type"] == "Finished" and c["status"] == "True"
               for c in w.get("status", {}).get("conditions") or [])
    ]  # fmt: skip
    kq.check(len(finished) == 8, f"{len(finished)} of 8 Workloads Finished")


def test_a_job_kueue_never_admits_says_why_in_the_queues_own_words(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kq: KueueView
) -> None:
    cluster_queue(kq, 2, ("small",))
    # 4 GPUs per trial against a quota of 2: Kueue can never admit it.
    kq.create(experiment("toobig", max_trials=1, parallelism=1, gpus=4, queue="small"))
    # A LocalQueue that does not exist: Kueue says so.
    kq.create(experiment("noqueue", max_trials=1, parallelism=1, queue="nobody"))

    def said(name: str, words: str) -> dict[str, Any] | None:
        for st in trial_status(kq, name):
            if st.get("reason") == "WaitingForAdmission" and words in (st.get("message") or ""):
                return st
        return None

    big = kq.until(lambda: said("toobig", GPU), 60, "toobig's trial to give Kueue's reason")
    kq.check(big["phase"] == "Pending" and big["message"].startswith("Kueue: "), f"{big}")
    none = kq.until(lambda: said("noqueue", "nobody"), 60, "noqueue's trial to give the reason")
    kq.check(none["phase"] == "Pending" and "Kueue: " in none["message"], f"{none}")
    operator.wait_reconciles()  # looked at again: still waiting, nothing ran
    kq.check(all(j.spec.suspend for j in kq.jobs()), "a Job Kueue never admitted runs")
    kq.check(not kq.pods(), "a Job Kueue never admitted has pods")
    for name in ("toobig", "noqueue"):
        kq.check(kq.phase(name) not in ("Succeeded", "Failed"), f"{name} ended: {kq.phase(name)}")


def test_pause_with_a_queue_deactivates_the_workloads_and_resume_readmits_them(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kq: KueueView
) -> None:
    cluster_queue(kq, 2, ("team-a",))
    name = "qpause"
    kq.create(experiment(name, max_trials=3, parallelism=2, run_seconds="6", queue="team-a"))
    with Reporter(cluster, namespace, operator.port, curve) as reporter:
        kq.until(
            lambda: sum(st.get("phase") == "Running" for st in trial_status(kq, name)) == 2,
            60,
            "two queued trials admitted and running",
        )
        kq.patch_experiment(name, {"spec": {"suspend": True, "suspendPolicy": "Pause"}})

        def all_paused() -> bool:
            wls = workloads(kq)
            return len(wls) == 2 and all(w["spec"].get("active") is False for w in wls)

        kq.until(all_paused, 30, "the Workloads deactivated")
        kq.until(lambda: all(j.spec.suspend for j in kq.jobs(name)), 30, "Kueue to suspend Jobs")
        kq.until(lambda: running_pods(kq) == 0 and not kq.pods(name), 30, "the pods gone")
        kq.until(
            lambda: all(st.get("reason") == "Paused" for st in trial_status(kq, name)),
            30,
            "the paused trials to say Paused",
        )
        kq.check(kq.phase(name) == "Suspended", f"phase {kq.phase(name)}")
        operator.wait_reconciles()  # looked at again: nothing starts, nothing resumes
        kq.check(len(kq.trials(name)) == 2, "a trial started while paused")
        kq.check(all(j.spec.suspend for j in kq.jobs(name)), "a paused Job runs")

        kq.patch_experiment(name, {"spec": {"suspend": False}})
        kq.until(
            lambda: all(w["spec"].get("active") is not False for w in workloads(kq)),
            30,
            "the Workloads reactivated",
        )
        done = kq.until(lambda: kq.finished(name), 120, "the resumed experiment to finish")
    kq.check(not reporter.errors, f"reporter errors: {reporter.errors}")
    kq.check(done["phase"] == "Succeeded", f"status: {done}")
    trials = kq.trials(name)
    kq.check(len(trials) == 3, f"{len(trials)} trials; maxTrials is 3")
    kq.check(
        all((t.get("status") or {}).get("phase") == "Succeeded" for t in trials),
        f"phases {[t.get('status', {}).get('phase') for t in trials]}",
    )
    kq.check(all(t["spec"].get("attempt", 0) == 0 for t in trials), "a paused trial was retried")
    kq.check(len(kq.events("TrialPaused")) >= 2, "no TrialPaused events")
    kq.check(len(kq.events("TrialResumed")) >= 2, "no TrialResumed events")


def test_a_trial_preempted_by_kueue_waits_is_readmitted_and_succeeds_without_a_failure(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kq: KueueView
) -> None:
    cluster_queue(kq, 1, ("team-a",), preempt=True)
    name = "preempted"
    kq.create(
        experiment(name, max_trials=1, parallelism=1, run_seconds="8", queue="team-a",
                   max_failed=0)
    )  # fmt: skip
    with Reporter(cluster, namespace, operator.port, curve) as reporter:
        kq.until(
            lambda: [st for st in trial_status(kq, name) if st.get("phase") == "Running"],
            60,
            "the trial admitted and running",
        )
        # A higher-priority Job of someone else needs the whole quota: Kueue preempts.
        urgent = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": "urgent",
                "namespace": namespace,
                "labels": {f"{KUEUE}/queue-name": "team-a", f"{KUEUE}/priority-class": "tf-urgent"},
            },
            "spec": {
                "suspend": True,
                "backoffLimit": 0,
                "template": {
                    "metadata": {"annotations": {"trialforge.io/kwok-run-seconds": "2"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "nodeSelector": {"type": "kwok"},
                        "containers": [
                            {"name": "c", "image": "registry.example/urgent:1",
                             "resources": {"limits": {GPU: 1}}}
                        ],
                    },
                },
            },
        }  # fmt: skip
        cluster.apply(urgent)
        waiting = kq.until(
            lambda: next(
                (
                    st
                    for st in trial_status(kq, name)
                    if st.get("reason") == "WaitingForAdmission"
                    and "Preempted" in (st.get("message") or "")
                ),
                None,
            ),
            60,
            "the trial to say Kueue preempted it",
        )
        kq.check(waiting["phase"] == "Pending", f"{waiting}")
        done = kq.until(lambda: kq.finished(name), 120, "the re-admitted trial to finish")
    kq.check(not reporter.errors, f"reporter errors: {reporter.errors}")
    kq.check(done["phase"] == "Succeeded", f"status: {done}")
    trials = kq.trials(name)
    kq.check(len(trials) == 1 and trials[0]["spec"].get("attempt", 0) == 0, "a new attempt")
    kq.check(trials[0]["status"]["phase"] == "Succeeded", f"{trials[0]['status']}")
    urgent_job = kq.batch.read_namespaced_job("urgent", namespace)
    kq.check(urgent_job.status.succeeded == 1, f"urgent Job: {urgent_job.status}")


def test_down_stops_kueue_and_leaves_nothing_behind(cluster: KubeCluster, tmp_path: Path) -> None:
    if cluster.external:
        pytest.skip("a local-process test: the cluster is external")
    state = tmp_path / "kq"
    cli = [sys.executable, str(CLUSTER_CLI), "--name", "kq-throwaway", "--dir", str(state)]
    up = subprocess.run([*cli, "up", "--kueue"], capture_output=True, text=True, timeout=600)
    try:
        assert up.returncode == 0, up.stderr[-4000:]
        status = json.loads(subprocess.run([*cli, "status"], capture_output=True,
                                           text=True).stdout)  # fmt: skip
        k = status["components"]["kueue"]
        assert k["alive"] and k["ports"], k
        again = subprocess.run([*cli, "up", "--kueue"], capture_output=True, text=True)
        assert again.returncode == 0, again.stderr[-2000:]
        same = json.loads(subprocess.run([*cli, "status"], capture_output=True,
                                         text=True).stdout)["components"]["kueue"]  # fmt: skip
        assert same["pid"] == k["pid"], "a second `up --kueue` started another Kueue"
    finally:
        down = subprocess.run([*cli, "down"], capture_output=True, text=True, timeout=180)
    assert down.returncode == 0, down.stderr
    assert not tfcluster.pid_alive(k["pid"]), "kueue left running"
    assert not state.exists()
    # no process anywhere still refers to the throwaway cluster's state dir
    leftovers = [
        d.name
        for d in Path("/proc").iterdir()
        if d.name.isdigit() and str(state) in tfcluster.pid_cmdline(int(d.name))
    ]
    assert not leftovers, leftovers
