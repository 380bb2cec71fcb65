"""Scale benchmark of the operator on the local control plane (issue: the operator).

1000 trials, parallelism 100, 50 kwok nodes x 8 GPUs, each trial's pod running a
random 1-5 s (a `duration` parameter fills the kwok run-time annotation).  A
reporter thread plays the collector: one observation per trial through the real
ingest endpoint.  Measured:

- apply -> first Job created (p50 over a few one-trial experiments)
- trial end -> next Job created (p50, p99), from watch events
- GPU slot occupancy while trials wait (active Jobs / parallelism, sampled)
- API writes per trial: the operator's own (its trialforge_api_writes_total) and
  everyone's (the apiserver's apiserver_request_total for write verbs)
- operator CPU seconds and peak RSS (from /proc)

Run:  .venv/bin/python bench/cluster_scale.py [--trials 1000 --parallelism 100] [--write]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import platform
import re
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
KEY = "bench-key"
NS = "bench"


def experiment(name: str, trials: int, parallelism: int, seed: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "trialforge.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "objective": {"metric": "loss", "direction": "minimize"},
            "parameters": [
                {"name": "duration", "type": "float", "min": 1.0, "max": 5.0},
                {"name": "x", "type": "float", "min": -1.0, "max": 1.0},
            ],
            "search": {"algorithm": "random", "seed": seed},
            "budget": {"maxTrials": trials, "parallelism": parallelism},
            "trial": {
                "template": {
                    "metadata": {
                        "annotations": {"trialforge.io/kwok-run-seconds": "${params.duration}"}
                    },
                    "spec": {
                        "containers": [
                            {
                                "name": "trainer",
                                "image": "registry.example/bench:1",
                                "command": ["train", "--x=${params.x}"],
                                "resources": {"limits": {"nvidia.com/gpu": 1}},
                            }
                        ]
                    },
                }
            },
        },
    }


def apiserver_writes(kubectl: list[str]) -> dict[str, float]:
    text = sh(*kubectl, "get", "--raw", "/metrics")
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("verb") in ("POST", "PUT", "PATCH", "DELETE", "CREATE", "UPDATE", "APPLY"):
            key = labels.get("resource", "?") + (
                "/" + labels["subresource"] if labels.get("subresource") else ""
            )
            out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def operator_writes(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("trialforge_api_writes_total{")
    )


def proc_cpu_rss(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )
    return cpu, hwm / 1024.0


class Watcher:
    """Watch events of Jobs and Trials in the namespace, with local receive times."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client, watch

        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.watch = watch
        self.job_added: dict[str, float] = {}
        self.job_done: dict[str, float] = {}
        self.trials: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._jobs, daemon=True).start()
        threading.Thread(target=self._trials, daemon=True).start()

    def _jobs(self) -> None:
        while not self.stop.is_set():
            try:
                self._watch_jobs()
            except Exception as exc:  # a dropped watch: watch again
                print(f"job watch: {type(exc).__name__}: {exc}", file=sys.stderr)
                time.sleep(0.5)

    def _trials(self) -> None:
        while not self.stop.is_set():
            try:
                self._watch_trials()
            except Exception as exc:
                print(f"trial watch: {type(exc).__name__}: {exc}", file=sys.stderr)
                time.sleep(0.5)

    def _watch_jobs(self) -> None:
        w = self.watch.Watch()
        for ev in w.stream(self.batch.list_namespaced_job, NS, timeout_seconds=30):
            now = time.time()
            job = ev["object"]
            name = job.metadata.name
            with self.lock:
                self.job_added.setdefault(name, now)
                for c in (job.status.conditions or []) if job.status else []:
                    if c.type in ("Complete", "Failed") and c.status == "True":
                        self.job_done.setdefault(name, now)
            if self.stop.is_set():
                break

    def _watch_trials(self) -> None:
        w = self.watch.Watch()
        for ev in w.stream(
            self.custom.list_namespaced_custom_object,
            "trialforge.io",
            "v1alpha1",
            NS,
            "trials",
            timeout_seconds=30,
        ):
            obj = ev["object"]
            with self.lock:
                self.trials.setdefault(obj["metadata"]["name"], obj)
            if self.stop.is_set():
                break


def reporter(watcher: Watcher, port: int, stop: threading.Event) -> None:
    """Play the collector: one observation per trial, posted once its Trial exists."""
    posted: set[str] = set()
    url = f"http://127.0.0.1:{port}/v1/observations"
    while not stop.is_set():
        with watcher.lock:
            todo = [(n, t) for n, t in watcher.trials.items() if n not in posted]
        for name, trial in todo:
            token = hmac.new(KEY.encode(), f"{NS}/{name}".encode(), hashlib.sha256).hexdigest()
            body = {
                "namespace": NS,
                "trial": name,
                "token": token,
                "observations": [
                    {
                        "seq": 1,
                        "step": 1,
                        "time": time.time(),
                        "metrics": {"loss": trial["spec"]["parameters"]["x"] ** 2},
                    }
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--parallelism", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--first-job-samples", type=int, default=5)
    parser.add_argument(
        "--write", action="store_true", help="record the figures in bench/RESULTS.md"
    )
    args = parser.parse_args()

    from kubernetes import client, config

    name = f"bench-{os.getpid()}"
    state = ROOT / "e2e" / ".state" / name
    print(f"starting a cluster with {args.nodes} nodes x {args.gpus} GPUs ...", flush=True)
    sh(
        sys.executable,
        str(CLUSTER),
        "--name",
        name,
        "--dir",
        str(state),
        "up",
        "--nodes",
        str(args.nodes),
        "--gpus",
        str(args.gpus),
        "--owner-pid",
        str(os.getpid()),
    )
    kubeconfig = str(state / "kubeconfig")
    bin_dir = sh(sys.executable, str(CLUSTER), "build").strip().splitlines()[-1]
    kubectl = [str(Path(bin_dir) / "kubectl"), "--kubeconfig", kubeconfig]
    operator = None
    try:
        sh(*kubectl, "apply", "--server-side", "-f", str(ROOT / "crds"))
        sh(
            *kubectl,
            "wait",
            "--for=condition=Established",
            "crd/experiments.trialforge.io",
            "crd/trials.trialforge.io",
        )
        sh(*kubectl, "create", "namespace", NS)
        port = free_port()
        log = open(state / "operator.log", "w")  # noqa: SIM115
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trialforge.cli",
                "operator",
                "--kubeconfig",
                kubeconfig,
                "-n",
                NS,
                "--lease-namespace",
                NS,
                "--port",
                str(port),
                "--workers",
                "2",
                "--ingest-url",
                f"http://127.0.0.1:{port}/v1/observations",
                "--log-format",
                "text",
            ],
            env={**os.environ, "TRIALFORGE_INGEST_KEY": KEY},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_healthy(port, tries=100)

        config.load_kube_config(config_file=kubeconfig)
        api = client.ApiClient()
        watcher = Watcher(api)
        watcher.start()
        stop = threading.Event()
        threading.Thread(target=reporter, args=(watcher, port, stop), daemon=True).start()
        custom = client.CustomObjectsApi(api)

        # apply -> first Job, on one-trial experiments
        first_job = []
        for i in range(args.first_job_samples):
            xp = experiment(f"first-{i}", 1, 1, seed=i)
            t0 = time.time()
            custom.create_namespaced_custom_object(
                "trialforge.io", "v1alpha1", NS, "experiments", xp
            )
            job = f"first-{i}-0"
            while job not in watcher.job_added:
                if time.time() - t0 > 60:
                    raise SystemExit(f"no Job {job} after 60 s; see {state / 'operator.log'}")
                time.sleep(0.005)
            first_job.append(watcher.job_added[job] - t0)
        print(f"apply -> first Job: {[round(x, 3) for x in first_job]} s", flush=True)
        time.sleep(8)

        writes0 = apiserver_writes(kubectl)
        op_writes0 = operator_writes(port)
        cpu0, _ = proc_cpu_rss(operator.pid)

        xp = experiment("scale", args.trials, args.parallelism)
        t0 = time.time()
        custom.create_namespaced_custom_object("trialforge.io", "v1alpha1", NS, "experiments", xp)
        samples = []
        rss_peak = 0.0
        shown = 0.0
        while True:
            time.sleep(0.1)
            with watcher.lock:
                created = sum(1 for n in watcher.job_added if n.startswith("scale-"))
                active = sum(
                    1
                    for n in watcher.job_added
                    if n.startswith("scale-") and n not in watcher.job_done
                )
            if created < args.trials and time.time() - t0 > 3:
                samples.append(active)
            if time.time() - shown > 15:
                shown = time.time()
                print(f"{shown - t0:.0f}s: {created} Jobs created, {active} active", flush=True)
            obj = custom.get_namespaced_custom_object(
                "trialforge.io", "v1alpha1", NS, "experiments", "scale"
            )
            phase = (obj.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed") and (obj.get("status") or {}).get("completionTime"):
                break
            if time.time() - t0 > 1800:
                raise SystemExit("the scale experiment did not finish in 30 minutes")
        elapsed = time.time() - t0
        time.sleep(2)
        cpu1, rss_peak = proc_cpu_rss(operator.pid)
        writes1 = apiserver_writes(kubectl)
        op_writes1 = operator_writes(port)
        stop.set()
        watcher.stop.set()

        with watcher.lock:
            starts = sorted(t for n, t in watcher.job_added.items() if n.startswith("scale-"))
            ends = sorted(t for n, t in watcher.job_done.items() if n.startswith("scale-"))
        # Each start after the first `parallelism` replaces the earliest unpaired end.
        gaps, j = [], 0
        for start in starts[args.parallelism :]:
            if j < len(ends) and ends[j] <= start:
                gaps.append(start - ends[j])
                j += 1
        total_writes = sum(writes1.values()) - sum(writes0.values())
        by_resource = {k: writes1.get(k, 0) - writes0.get(k, 0) for k in writes1}
        top = sorted(((v, k) for k, v in by_resource.items() if v > 0), reverse=True)[:8]
        counts = (obj.get("status") or {}).get("trials", {})
        result = {
            "trials": args.trials,
            "parallelism": args.parallelism,
            "nodes": f"{args.nodes} x {args.gpus} GPUs",
            "phase": phase,
            "succeeded": counts.get("succeeded"),
            "wall_s": round(elapsed, 1),
            "apply_to_first_job_p50_s": round(statistics.median(first_job), 3),
            "end_to_next_job_p50_s": round(percentile(gaps, 50), 3),
            "end_to_next_job_p99_s": round(percentile(gaps, 99), 3),
            "occupancy": round(statistics.mean(samples) / args.parallelism, 4) if samples else None,
            "operator_writes_per_trial": round((op_writes1 - op_writes0) / args.trials, 2),
            "apiserver_writes_per_trial": round(total_writes / args.trials, 2),
            "top_write_resources": {k: int(v) for v, k in top},
            "operator_cpu_s": round(cpu1 - cpu0, 1),
            "operator_peak_rss_mb": round(rss_peak, 1),
        }
        print(json.dumps(result, indent=1))
        if args.write:
            record(result)
        return 0
    except BaseException:
        log_path = state / "operator.log"
        if log_path.exists():
            print("--- operator log (tail) ---", file=sys.stderr)
            print("\n".join(log_path.read_text().splitlines()[-40:]), file=sys.stderr)
        raise
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(10)
        subprocess.run(
            [sys.executable, str(CLUSTER), "--name", name, "--dir", str(state), "down"],
            capture_output=True,
        )


def record(r: dict[str, Any]) -> None:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    section = f"""<!-- cluster_scale:start -->
## Operator at scale (bench/cluster_scale.py)

Machine: {os.cpu_count()} cores ({cpu}), {int(mem) // 1024 // 1024} GiB RAM, Python {platform.python_version()};
the control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok) runs on the
same {os.cpu_count()} cores as the operator and the benchmark. Date: {time.strftime("%Y-%m-%d")}.
Reproduce: `.venv/bin/python bench/cluster_scale.py --trials {r["trials"]} --parallelism {r["parallelism"]} --write`

| figure | value | target |
|---|---|---|
| trials / parallelism / nodes | {r["trials"]} / {r["parallelism"]} / {r["nodes"]} | |
| experiment result | {r["phase"]}, {r["succeeded"]} succeeded, {r["wall_s"]} s | |
| apply → first Job (p50) | {r["apply_to_first_job_p50_s"]} s | |
| trial end → next Job created (p50 / p99) | {r["end_to_next_job_p50_s"]} s / {r["end_to_next_job_p99_s"]} s | p99 ≤ 1 s |
| GPU slot occupancy while trials wait | {r["occupancy"]} | ≥ 0.99 |
| operator's API writes per trial | {r["operator_writes_per_trial"]} | ≤ 8 |
| all API writes per trial (apiserver_request_total) | {r["apiserver_writes_per_trial"]} | |
| operator CPU | {r["operator_cpu_s"]} s | |
| operator peak RSS | {r["operator_peak_rss_mb"]} MB | ≤ 300 MB |

All writes by resource during the run: {json.dumps(r["top_write_resources"])}
<!-- cluster_scale:end -->"""
    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if "<!-- cluster_scale:start -->" in text:
        text = re.sub(
            r"<!-- cluster_scale:start -->.*<!-- cluster_scale:end -->", section, text, flags=re.S
        )
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
