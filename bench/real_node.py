"""Trial pods on the real node real-0 (issue 21): where a real trial's time goes.

Starts its own cluster with `e2e/cluster up --real-node` (so it cannot run beside
the test suite: one real node per machine), imports trialforge/operator:dev and
trialforge/trainer:dev, runs the operator as a local process on the bridge's
gateway address, and one Experiment of N one-worker trials on real-0. Each
trainer prints a line every 0.2 s carrying its own clock (the pods share this
machine's clock), then prints its exit time and exits. Measured from watch
events, on this machine's clock:

- Job created -> trainer container running (p50, p99)
- a line printed by the trainer -> its step stored in the Trial's status (p50, p99)
- trainer exit -> pod Succeeded (the collector sidecar stopped by the kubelet) (p50, p99)
- the collector sidecar's peak RSS (VmHWM of the `trialforge collector` processes)
- `up --real-node` time (cluster + node), images cached

Run:  .venv/bin/python bench/real_node.py [--trials 8] [--lines 25]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "e2e"))
sys.path.insert(0, str(ROOT / "tests" / "cluster"))

import tfcluster  # noqa: E402
import tfimages  # noqa: E402
import tfnode  # noqa: E402
from benchlib import percentile  # noqa: E402

NS = "bench"
TRAINER = (
    "import json, sys, time\n"
    "n = int(sys.argv[1])\n"
    "for step in range(1, n + 1):\n"
    "    print(json.dumps({'step': step, 'loss': 1.0 / step, 't': time.time()}), flush=True)\n"
    "    time.sleep(0.2)\n"
    "print(json.dumps({'exit_at': time.time()}), flush=True)\n"
)


def experiment(trials: int, lines: int) -> dict[str, Any]:
    return {
        "apiVersion": "trialforge.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": "bench-real", "namespace": NS},
        "spec": {
            "objective": {"metric": "loss", "direction": "minimize"},
            "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
            "search": {"algorithm": "random", "seed": 1},
            "budget": {"maxTrials": trials, "parallelism": 2},
            "trial": {
                "metrics": {"source": "stdout", "format": "json"},
                "template": {
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": tfnode.NODE_NAME},
                        "tolerations": [tfnode.TOLERATION],
                        "terminationGracePeriodSeconds": 5,
                        "containers": [
                            {
                                "name": "trainer",
                                "image": "trialforge/trainer:dev",
                                "imagePullPolicy": "Never",
                                "command": ["python", "-c", TRAINER, str(lines)],
                            }
                        ],
                    }
                },
            },
        },
    }


def collector_hwm_kb() -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "trialforge collector" not in cmd and "trialforge.cli collector" not in cmd:
                continue
            for line in (p / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out.append(int(line.split()[1]))
        except OSError:
            continue
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--lines", type=int, default=25)
    a = ap.parse_args()
    tars = tfimages.image_tars()
    state = Path(tempfile.mkdtemp(prefix="tf-bench-real-"))
    cluster = tfcluster.Cluster(state / "c", "bench-real")
    t0 = time.monotonic()
    cluster.up(owner_pid=os.getpid(), real_node=True)
    up_s = time.monotonic() - t0
    node = tfnode.RealNode(cluster)
    t0 = time.monotonic()
    for ref, tar in tars.items():
        node.load_image(tar, "docker.io/" + ref)
    load_s = time.monotonic() - t0
    op = None
    try:
        from kubernetes import client, config, watch

        k = cluster.kubectl
        for crd in sorted((ROOT / "crds").glob("*.yaml")):
            k("apply", "--server-side", "-f", str(crd))
        k("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        k("create", "namespace", NS)
        from operatorlib import OperatorProcess  # the tests' operator runner

        class Op(OperatorProcess):
            def command(self) -> list[str]:
                return [*super().command(), "--collector-image", "trialforge/operator:dev"]

        op = Op(cluster.kubeconfig, NS, state / "operator.log", host=tfnode.GATEWAY)
        op.start()
        api = config.new_client_from_config(str(cluster.kubeconfig))
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        custom = client.CustomObjectsApi(api)
        job_created: dict[str, float] = {}
        running: dict[str, float] = {}
        succeeded: dict[str, float] = {}
        stored: dict[tuple[str, int], float] = {}
        hwm: list[int] = []
        stop = threading.Event()

        def watch_jobs() -> None:
            for ev in watch.Watch().stream(batch.list_namespaced_job, NS, timeout_seconds=900):
                job_created.setdefault(ev["object"].metadata.name, time.time())
                if stop.is_set():
                    return

        def watch_pods() -> None:
            for ev in watch.Watch().stream(core.list_namespaced_pod, NS, timeout_seconds=900):
                p = ev["object"]
                job = (p.metadata.labels or {}).get("job-name", p.metadata.name)
                for cs in p.status.container_statuses or []:
                    if cs.name == "trainer" and cs.state and cs.state.running:
                        running.setdefault(job, time.time())
                if p.status.phase == "Succeeded":
                    succeeded.setdefault(job, time.time())
                if stop.is_set():
                    return

        def watch_trials() -> None:
            w = watch.Watch()
            for ev in w.stream(
                custom.list_namespaced_custom_object,
                "trialforge.io",
                "v1alpha1",
                NS,
                "trials",
                timeout_seconds=900,
            ):
                t = ev["object"]
                now = time.time()
                for pt in ((t.get("status") or {}).get("history") or {}).get("loss", []):
                    stored.setdefault((t["metadata"]["name"], int(pt["step"])), now)
                if stop.is_set():
                    return

        def sample_rss() -> None:
            while not stop.is_set():
                hwm.extend(collector_hwm_kb())
                time.sleep(0.5)

        threads = [threading.Thread(target=f, daemon=True) for f in
                   (watch_jobs, watch_pods, watch_trials, sample_rss)]  # fmt: skip
        for t in threads:
            t.start()
        time.sleep(1)
        k("-n", NS, "create", "-f", "-", input_=json.dumps(experiment(a.trials, a.lines)))
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            xp = custom.get_namespaced_custom_object(
                "trialforge.io", "v1alpha1", NS, "experiments", "bench-real"
            )
            if (xp.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                break
            time.sleep(1)
        time.sleep(2)
        stop.set()
        printed: dict[tuple[str, int], float] = {}
        exit_at: dict[str, float] = {}
        for p in core.list_namespaced_pod(NS).items:
            job = (p.metadata.labels or {}).get("job-name", p.metadata.name)
            log = core.read_namespaced_pod_log(p.metadata.name, NS, container="trainer")
            for line in log.splitlines():
                if not line.startswith("{"):
                    continue
                d = json.loads(line)
                if "exit_at" in d:
                    exit_at[job] = d["exit_at"]
                elif "t" in d:
                    printed[(job, int(d["step"]))] = d["t"]
        start = [running[j] - job_created[j] for j in running if j in job_created]
        line_to_stored = [stored[k] - printed[k] for k in printed if k in stored]
        exit_to_done = [succeeded[j] - exit_at[j] for j in exit_at if j in succeeded]
        res = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "date": time.strftime("%Y-%m-%d"),
            "phase": xp.get("status", {}).get("phase"),
            "trials": a.trials,
            "up_real_node_s": round(up_s, 1),
            "image_load_s": round(load_s, 1),
            "job_to_running_s": {
                "p50": round(percentile(start, 50), 2),
                "p99": round(percentile(start, 99), 2),
                "n": len(start),
            },
            "line_to_stored_s": {
                "p50": round(percentile(line_to_stored, 50), 3),
                "p99": round(percentile(line_to_stored, 99), 3),
                "n": len(line_to_stored),
                "of": len(printed),
            },
            "exit_to_succeeded_s": {
                "p50": round(percentile(exit_to_done, 50), 2),
                "p99": round(percentile(exit_to_done, 99), 2),
                "n": len(exit_to_done),
            },
            "collector_peak_rss_mb": round(max(hwm) / 1024, 1) if hwm else None,
            "collector_rss_median_mb": round(statistics.median(hwm) / 1024, 1) if hwm else None,
        }
        print(json.dumps(res, indent=2))
        return 0 if res["phase"] == "Succeeded" else 1
    finally:
        if op is not None:
            op.stop()
            op.kill()
        cluster.down(quiet=True)
        subprocess.run(["rm", "-rf", str(state)], check=False)


if __name__ == "__main__":
    sys.exit(main())
