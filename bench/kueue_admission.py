"""Admission latency of trials under a contended Kueue ClusterQueue (issue 22, item 3).

Kueue's own scheduler benchmark (test/performance/scheduler, configs/baseline in the
sigs.k8s.io/kueue module) runs, per ClusterQueue of nominal quota 20, 500 workloads
in three classes -- small (request 1, 200 ms, priority 50), medium (5, 500 ms, 100),
large (20, 1000 ms, 200) -- with preemption of lower priorities in the queue, and
reports a mean time to admission of 6.7 s (large), 76.8 s (medium) and 215.5 s
(small) (configs/baseline/rangespec.yaml, averages of 5 runs of 30 ClusterQueues).

Here the same shape, scaled down to one ClusterQueue on a 2-core machine: quota 20
`nvidia.com/gpu`, preemption withinClusterQueue LowerPriority, and three Trialforge
Experiments in one LocalQueue -- small (35 trials, 1 GPU, 0.2 s), medium (10, 5 GPU,
0.5 s), large (5, 20 GPU, 1 s), a tenth of one baseline ClusterQueue -- each with
parallelism = its trial count, so every trial's Job is created at once and waits.
The priorities are PriorityClasses on the pod template (Kueue reads a workload's
priority from them). Everything is real: the local control plane, Kueue v0.17.0's
manager (`e2e/cluster up --kueue`), the trialforge operator, kwok GPU nodes.

Measured per class, from watch events received here (ms resolution):
- Kueue's time to admission: Workload seen -> Workload Admitted (first admission);
- a trial's: Trial created -> its Job unsuspended by Kueue (first time);
- Kueue preemptions (Workloads evicted with reason Preempted).

Run:  .venv/bin/python bench/kueue_admission.py [--scale 1] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchlib import free_port, percentile, sh, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "e2e" / "cluster"
NS = "bench-kueue"
KEY = "bench-key"
KV = ("kueue.x-k8s.io", "v1beta2")
QUOTA = 20
# class: (trials at scale 1, GPUs per trial, run seconds, priority) -- Kueue's baseline / 10
CLASSES: dict[str, tuple[int, int, float, int]] = {
    "small": (35, 1, 0.2, 50),
    "medium": (10, 5, 0.5, 100),
    "large": (5, 20, 1.0, 200),
}
BASELINE_MEAN_S = {"small": 215.5, "medium": 76.8, "large": 6.7}


def experiment(cls: str, trials: int, gpus: int, seconds: float) -> dict[str, Any]:
    return {
        "apiVersion": "trialforge.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": cls, "namespace": NS},
        "spec": {
            "objective": {"metric": "loss", "direction": "minimize"},
            "parameters": [{"name": "x", "type": "float", "min": -1.0, "max": 1.0}],
            "search": {"algorithm": "random", "seed": 1},
            "budget": {"maxTrials": trials, "parallelism": trials, "maxFailedTrials": 0},
            "queue": "bench",
            "trial": {
                "template": {
                    "metadata": {"annotations": {"trialforge.io/kwok-run-seconds": str(seconds)}},
                    "spec": {
                        "priorityClassName": f"tf-bench-{cls}",
                        "nodeSelector": {"type": "kwok"},
                        "containers": [
                            {
                                "name": "trainer",
                                "image": "registry.example/bench:1",
                                "command": ["train", "--x=${params.x}"],
                                "resources": {"limits": {"nvidia.com/gpu": gpus}},
                            }
                        ],
                    },
                }
            },
        },
    }


def kueue_objects() -> list[dict[str, Any]]:
    kv = "/".join(KV)
    objs: list[dict[str, Any]] = [
        {"apiVersion": kv, "kind": "ResourceFlavor", "metadata": {"name": "bench-gpu"}},
        {
            "apiVersion": kv,
            "kind": "ClusterQueue",
            "metadata": {"name": "bench"},
            "spec": {
                "namespaceSelector": {},
                "preemption": {"withinClusterQueue": "LowerPriority"},
                "resourceGroups": [
                    {
                        "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                        "flavors": [
                            {
                                "name": "bench-gpu",
                                "resources": [
                                    {"name": "cpu", "nominalQuota": "1000"},
                                    {"name": "memory", "nominalQuota": "1Ti"},
                                    {"name": "nvidia.com/gpu", "nominalQuota": str(QUOTA)},
                                ],
                            }
                        ],
                    }
                ],
            },
        },
        {
            "apiVersion": kv,
            "kind": "LocalQueue",
            "metadata": {"name": "bench", "namespace": NS},
            "spec": {"clusterQueue": "bench"},
        },
    ]
    for cls, (_, _, _, prio) in CLASSES.items():
        objs.append(
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": f"tf-bench-{cls}"},
                "value": prio,
            }
        )
    return objs


class Watcher:
    """Workloads, Jobs and Trials of the namespace, with the local times things happened."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client, watch

        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.watch = watch
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.wl_seen: dict[str, float] = {}
        self.wl_admitted: dict[str, float] = {}
        self.wl_job: dict[str, str] = {}
        self.preempted: set[tuple[str, str]] = set()  # (workload uid, eviction time)
        self.trial_created: dict[str, float] = {}
        self.job_admitted: dict[str, float] = {}

    def start(self) -> None:
        for fn in (self._workloads, self._jobs, self._trials):
            threading.Thread(target=self._forever, args=(fn,), daemon=True).start()

    def _forever(self, fn: Any) -> None:
        while not self.stop.is_set():
            try:
                fn()
            except Exception as exc:  # a dropped watch: watch again
                print(f"watch: {type(exc).__name__}: {exc}", file=sys.stderr)
                time.sleep(0.5)

    def _workloads(self) -> None:
        w = self.watch.Watch()
        for ev in w.stream(
            self.custom.list_namespaced_custom_object, *KV, NS, "workloads", timeout_seconds=30
        ):
            now = time.time()
            wl = ev["object"]
            uid = wl["metadata"]["uid"]
            with self.lock:
                self.wl_seen.setdefault(uid, now)
                owner = (wl["metadata"].get("ownerReferences") or [{}])[0].get("name", "")
                self.wl_job[uid] = owner
                for c in (wl.get("status") or {}).get("conditions") or []:
                    if c["type"] == "Admitted" and c["status"] == "True":
                        self.wl_admitted.setdefault(uid, now)
                    evicted = c["type"] == "Evicted" and c["status"] == "True"
                    if evicted and c.get("reason") == "Preempted":
                        self.preempted.add((uid, c.get("lastTransitionTime", "")))
            if self.stop.is_set():
                break

    def _jobs(self) -> None:
        w = self.watch.Watch()
        for ev in w.stream(self.batch.list_namespaced_job, NS, timeout_seconds=30):
            now = time.time()
            job = ev["object"]
            if job.spec.suspend is False:
                with self.lock:
                    self.job_admitted.setdefault(job.metadata.name, now)
            if self.stop.is_set():
                break

    def _trials(self) -> None:
        w = self.watch.Watch()
        for ev in w.stream(
            self.custom.list_namespaced_custom_object,
            "trialforge.io",
            "v1alpha1",
            NS,
            "trials",
            timeout_seconds=30,
        ):
            with self.lock:
                self.trial_created.setdefault(ev["object"]["metadata"]["name"], time.time())
            if self.stop.is_set():
                break


def reporter(watcher: Watcher, port: int, stop: threading.Event) -> None:
    """Play the collector: one observation per trial, once its Job runs."""
    import hashlib
    import hmac

    posted: set[str] = set()
    url = f"http://127.0.0.1:{port}/v1/observations"
    while not stop.is_set():
        with watcher.lock:
            todo = [n for n in watcher.job_admitted if n not in posted]
        for name in todo:
            token = hmac.new(KEY.encode(), f"{NS}/{name}".encode(), hashlib.sha256).hexdigest()
            body = {
                "namespace": NS,
                "trial": name,
                "token": token,
                "observations": [
                    {"seq": 1, "step": 1, "time": time.time(), "metrics": {"loss": 1.0}}
                ],
            }
            req = urllib.request.Request(
                url, json.dumps(body).encode(), {"Content-Type": "application/json"}
            )
            try:
                urllib.request.urlopen(req, timeout=10).read()
                posted.add(name)
            except Exception:
                pass
        stop.wait(0.1)


def stats(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "mean_s": round(statistics.mean(values), 2) if values else float("nan"),
        "p99_s": round(percentile(values, 99), 2),
        "max_s": round(max(values), 2) if values else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the trial counts")
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    classes = {c: (max(1, round(n * args.scale)), g, s, p) for c, (n, g, s, p) in CLASSES.items()}

    from kubernetes import client, config

    name = f"bench-kueue-{os.getpid()}"
    state = ROOT / "e2e" / ".state" / name
    print("starting a cluster with Kueue, 2 kwok nodes x 40 GPUs ...", flush=True)
    t_up = time.time()
    sh(
        sys.executable, str(CLUSTER), "--name", name, "--dir", str(state), "up", "--kueue",
        "--nodes", "2", "--gpus", "40", "--owner-pid", str(os.getpid()), "--timeout", "300",
    )  # fmt: skip
    up_s = time.time() - t_up
    kubeconfig = str(state / "kubeconfig")
    bin_dir = Path(json.loads(sh(sys.executable, str(CLUSTER), "--dir", str(state), "status"))[
        "bin_dir"
    ])  # fmt: skip
    kubectl = [str(bin_dir / "kubectl"), "--kubeconfig", kubeconfig]
    operator = None
    try:
        sh(*kubectl, "apply", "--server-side", "-f", str(ROOT / "crds"))
        sh(*kubectl, "wait", "--for=condition=Established", "crd/experiments.trialforge.io",
           "crd/trials.trialforge.io")  # fmt: skip
        sh(*kubectl, "create", "namespace", NS)
        sh(*kubectl, "apply", "-f", "-",
           input=json.dumps({"apiVersion": "v1", "kind": "List", "items": kueue_objects()}))  # fmt: skip
        port = free_port()
        log = open(state / "operator.log", "w")  # noqa: SIM115
        operator = subprocess.Popen(
            [
                sys.executable, "-m", "trialforge.cli", "operator", "--kubeconfig", kubeconfig,
                "-n", NS, "--lease-namespace", NS, "--port", str(port),
                "--ingest-url", f"http://127.0.0.1:{port}/v1/observations",
                "--log-format", "text",
            ],
            env={**os.environ, "TRIALFORGE_INGEST_KEY": KEY},
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_healthy(port, tries=150)

        config.load_kube_config(config_file=kubeconfig)
        api = client.ApiClient()
        watcher = Watcher(api)
        watcher.start()
        stop = threading.Event()
        threading.Thread(target=reporter, args=(watcher, port, stop), daemon=True).start()
        custom = client.CustomObjectsApi(api)
        time.sleep(1)

        t0 = time.time()
        for cls, (n, g, s, _) in classes.items():
            custom.create_namespaced_custom_object(
                "trialforge.io", "v1alpha1", NS, "experiments", experiment(cls, n, g, s)
            )
        shown = 0.0
        while True:
            time.sleep(0.5)
            phases = {}
            for cls in classes:
                obj = custom.get_namespaced_custom_object(
                    "trialforge.io", "v1alpha1", NS, "experiments", cls
                )
                st = obj.get("status") or {}
                phases[cls] = st.get("phase") if st.get("completionTime") else None
            if time.time() - shown > 15:
                shown = time.time()
                with watcher.lock:
                    adm = len(watcher.wl_admitted)
                print(f"{shown - t0:.0f}s: {adm} workloads admitted; {phases}", flush=True)
            if all(p in ("Succeeded", "Failed") for p in phases.values()):
                break
            if time.time() - t0 > 1200:
                raise SystemExit("the experiments did not finish in 20 minutes")
        wall = time.time() - t0
        stop.set()
        watcher.stop.set()

        result: dict[str, Any] = {"wall_s": round(wall, 1), "phases": phases, "up_s": round(up_s)}
        with watcher.lock:
            for cls in classes:
                wl = [
                    watcher.wl_admitted[u] - watcher.wl_seen[u]
                    for u, job in watcher.wl_job.items()
                    if job.startswith(f"{cls}-") and u in watcher.wl_admitted
                ]
                tr = [
                    watcher.job_admitted[t] - watcher.trial_created[t]
                    for t in watcher.trial_created
                    if t.startswith(f"{cls}-") and t in watcher.job_admitted
                ]
                pre = sum(
                    1 for u, _ in watcher.preempted if watcher.wl_job.get(u, "").startswith(cls)
                )
                result[cls] = {
                    "trials": classes[cls][0],
                    "workload": stats(wl),
                    "trial": stats(tr),
                    "preemptions": pre,
                }
        print(json.dumps(result, indent=1))
        if args.write:
            record(result, classes)
        return 0
    except BaseException:
        for f in ("operator.log", "kueue/kueue.log"):
            p = state / f
            if p.exists():
                print(f"--- {f} (tail) ---", file=sys.stderr)
                print("\n".join(p.read_text().splitlines()[-40:]), file=sys.stderr)
        raise
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(10)
        subprocess.run(
            [sys.executable, str(CLUSTER), "--name", name, "--dir", str(state), "down"],
            capture_output=True,
        )


def record(r: dict[str, Any], classes: dict[str, tuple[int, int, float, int]]) -> None:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    rows = []
    for cls, (n, g, s, p) in classes.items():
        c = r[cls]
        rows.append(
            f"| {cls} | {n} x {g} GPU, {s} s, priority {p} | {c['workload']['mean_s']} s / "
            f"{c['workload']['p99_s']} s | {c['trial']['mean_s']} s / {c['trial']['p99_s']} s | "
            f"{c['preemptions']} | {BASELINE_MEAN_S[cls]} s |"
        )
    table = "\n".join(rows)
    section = f"""
## Admission latency under a contended Kueue ClusterQueue (bench/kueue_admission.py)

Machine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}; the control plane,
Kueue v0.17.0's manager (`e2e/cluster up --kueue`, built from its Go module), the operator and the
benchmark share those cores. Date: {time.strftime("%Y-%m-%d")}.
Reproduce: `.venv/bin/python bench/kueue_admission.py --write`

Kueue's own scheduler baseline (sigs.k8s.io/kueue test/performance/scheduler,
configs/baseline): per ClusterQueue of quota 20, 350 small (1, 200 ms, priority 50), 100 medium
(5, 500 ms, 100) and 50 large (20, 1 s, 200) workloads, arriving every 100 / 500 / 1200 ms,
preemption of lower priorities; 30 ClusterQueues in 5 cohorts, minimal Kueue in envtest. Here:
one ClusterQueue of 20 `nvidia.com/gpu`, the same classes at a tenth of one queue's count, as
three Trialforge Experiments in one LocalQueue whose trials' Jobs are all created at once
(parallelism = trial count), so every class waits from the start. Time to admission: Workload
seen → Admitted (Kueue's measure); a trial's: Trial created → Job unsuspended by Kueue.

| class | trials | Workload → admitted (mean / p99) | Trial → Job admitted (mean / p99) | preemptions | Kueue baseline mean |
|---|---|---|---|---|---|
{table}

All {sum(n for n, *_ in classes.values())} trials in {r["wall_s"]} s ({r["phases"]}); the
cluster with Kueue came up in {r["up_s"]} s.
"""
    path = ROOT / "bench" / "RESULTS.md"
    path.write_text(path.read_text().rstrip() + "\n" + section)


if __name__ == "__main__":
    sys.exit(main())
