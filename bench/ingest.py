"""Ingest benchmark (issue 6): the operator's /v1/observations under 100 collectors,
and the collector's own cost.

Part 1 — ingest throughput.  A local control plane (e2e/cluster), the real
`trialforge operator` process, one Experiment whose 100 trials run on kwok (their
pods "run" for the whole benchmark), and 100 concurrent collectors on loopback:
each one sends a batch of --batch observations, waits for the acknowledgement,
and sends the next (the collector's own protocol: one request in flight, seq
numbers, `received` and `stored` in the answer).  The collectors are asyncio clients spread over
--procs processes (100 real collector processes would mostly measure 100 Python
interpreters competing for the same CPUs).  Measured: observations stored per
second, the answers' latency (receipt) and the time until an observation is
answered as stored in the Trial (both the client's view), operator CPU seconds per 10k
observations (from /proc), and the apiserver's share.

Part 2 — the collector.  A real `trialforge collector` process tails a file that
a writer fills at 1,000 lines/s for --tail-seconds, delivering to the same
operator; measured: its CPU (% of one core) and peak RSS.

Run:  .venv/bin/python bench/ingest.py [--seconds 30 --rate 200 --batch 2000 --collectors 100] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchlib import free_port, sh

from trialforge.metrics.collector import SEND_JITTER, send_pause

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "e2e" / "cluster"
KEY = "bench-ingest-key"
# Seconds into the load after which answers are also counted apart: the collectors
# start together, and their jittered pauses take a few rounds to spread them out.
SETTLED = 10.0
LAG_TICK = 0.005  # seconds: the load generator's probe of its own event loop
NS = "bench-ingest"
XP = "ingest"


def token(namespace: str, trial: str) -> str:
    return hmac.new(KEY.encode(), f"{namespace}/{trial}".encode(), hashlib.sha256).hexdigest()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pids_named(fragment: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if fragment in cmd:
                out.append(int(entry.name))
    return out


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus`` (affinity is per thread on Linux)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            os.sched_setaffinity(int(task.name), cpus)


def experiment(trials: int) -> dict[str, Any]:
    return {
        "apiVersion": "trialforge.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": XP, "namespace": NS},
        "spec": {
            "objective": {"metric": "loss", "direction": "minimize"},
            "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
            "search": {"algorithm": "random", "seed": 1},
            "budget": {"maxTrials": trials, "parallelism": trials},
            "trial": {
                "template": {
                    "metadata": {"annotations": {"trialforge.io/kwok-run-seconds": "3600"}},
                    "spec": {
                        "nodeSelector": {"type": "kwok"},
                        "containers": [
                            {"name": "trainer", "image": "bench/trainer:1", "command": ["train"]}
                        ],
                    },
                }
            },
        },
    }


# -- the load: collectors as asyncio clients ---------------------------------------------------


async def _post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
) -> tuple[int, dict[str, Any]]:
    writer.write(
        (
            f"POST /v1/observations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    await writer.drain()
    status_line = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return int(status_line.split()[1]), json.loads(await reader.readexactly(length))


async def _collector(
    port: int,
    trial: str,
    batch: int,
    until: float,
    out: dict[str, list[float]],
    rate: float,
    interval: float,
    fixed: bool,
) -> None:
    """One collector, speaking the collector's protocol: one request in flight; each
    carries what was produced since the last one (up to ``batch``), after the
    collector's own pause (``send_pause``: the send interval, drawn from 0.5 to 1.5
    times it); ``received`` says where the next starts, ``stored`` what may be
    forgotten.  ``fixed``: a request every ``interval`` exactly instead, whatever the
    answer time, so collectors that start together stay together.  rate == 0: closed
    loop, fixed batches of ``batch``, back to back.  Measured: each request's answer
    time (receipt), and for each observation batch the time until an answer said it
    was stored."""
    rng = random.Random(trial)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = {"namespace": NS, "trial": trial, "token": token(NS, trial)}
    prefix = (json.dumps(head)[:-1] + ',"observations":[').encode()
    produced, sent, stored = 0, 0, 0
    out_first_done = False
    kept: list[tuple[int, str]] = []  # not yet stored

    def after(seq: int) -> list[tuple[int, str]]:
        start = max(0, seq - kept[0][0] + 1) if kept else 0
        return kept[start : start + batch]

    waiting: list[tuple[int, float]] = []  # (last seq of a batch, when it was sent)
    started = time.monotonic()
    started_perf = time.perf_counter()

    def answered(code: int, answer: dict[str, Any], now: float) -> None:
        nonlocal sent, stored, kept, waiting
        if code in (200, 409) and "stored" in answer:
            stored = max(stored, answer["stored"])
            sent = answer.get("received", answer["stored"])
            if kept:  # contiguous from its first seq: cut by index, not by a scan
                del kept[: max(0, stored - kept[0][0] + 1)]
            out["stored_lag"].extend(now - at for last, at in waiting if last <= stored)
            waiting = [(last, at) for last, at in waiting if last > stored]

    try:
        while (now := time.monotonic()) < until:
            due = batch if rate <= 0 else int((now - started) * rate) - produced
            for _ in range(max(0, due)):
                produced += 1
                # Encoded once, as the collector's journal keeps them.
                kept.append(
                    (produced, json.dumps(
                        {"seq": produced, "step": produced, "time": time.time(),
                         "metrics": {"loss": 1.0 / produced, "acc": produced / 1e6, "lr": 0.01}},
                        separators=(",", ":"),
                    ))
                )  # fmt: skip
            todo = after(sent)
            if not todo:
                await asyncio.sleep(interval)
                continue
            body = prefix + ",".join(text for _, text in todo).encode() + b"]}"
            sent_at = time.perf_counter()
            code, answer = await _post(reader, writer, body)
            took = time.perf_counter() - sent_at
            # A trial's first request also reads its Trial from the API server (once
            # per trial, or after an operator restart): reported apart.
            out["first" if not out_first_done else "receipt"].append(took)
            if sent_at - started_perf >= SETTLED:
                out["receipt_settled"].append(took)
            out_first_done = True
            if code == 200:
                waiting.append((todo[-1][0], time.monotonic() - took))
                out["received"].append(answer.get("accepted", 0))
            answered(code, answer, time.monotonic())
            if code == 503:
                await asyncio.sleep(0.05)
            elif rate > 0 and fixed:
                await asyncio.sleep(max(0.0, interval - took))
            elif rate > 0:
                await asyncio.sleep(send_pause(interval, rng))
        out["stored_in_load"].append(stored)
        # The end: send the rest, then ask to be answered once it is stored.
        drain_until = time.monotonic() + 60
        while stored < produced and time.monotonic() < drain_until:
            todo = after(sent)
            body = prefix + ",".join(text for _, text in todo).encode() + b'],"wait":2.0}'
            code, answer = await _post(reader, writer, body)
            if code == 200 and todo:
                waiting.append((todo[-1][0], time.monotonic()))
            answered(code, answer, time.monotonic())
        out["stored"].append(stored)
        out["produced"].append(produced)
        out["drained_at"].append(time.monotonic())
    finally:
        writer.close()


def _load_process(
    port: int,
    trials: list[str],
    batch: int,
    seconds: float,
    rate: float,
    interval: float,
    fixed: bool,
    out: Any,
) -> None:
    result: dict[str, list[float]] = {
        k: []
        for k in (
            "receipt",
            "receipt_settled",
            "loop_lag",
            "stored_lag",
            "received",
            "stored",
            "produced",
            "drained_at",
            "stored_in_load",
            "first",
        )
    }

    async def lag_probe(until: float) -> None:
        """How late this process's own event loop wakes up (its delays are in every
        answer time it measures)."""
        while time.monotonic() < until:
            asked = time.perf_counter()
            await asyncio.sleep(LAG_TICK)
            result["loop_lag"].append(time.perf_counter() - asked - LAG_TICK)

    async def main() -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(
            lag_probe(until),
            *(_collector(port, t, batch, until, result, rate, interval, fixed) for t in trials),
        )

    asyncio.run(main())
    result["cpu_s"] = [time.process_time()]
    out.put(result)


def run_load(
    port: int,
    trials: list[str],
    batch: int,
    seconds: float,
    procs: int,
    rate: float,
    interval: float,
    fixed: bool = False,
) -> dict[str, Any]:
    queue: Any = mp.get_context("fork").Queue()
    groups = [trials[i::procs] for i in range(procs)]
    workers = [
        mp.get_context("fork").Process(
            target=_load_process, args=(port, g, batch, seconds, rate, interval, fixed, queue)
        )
        for g in groups
    ]
    started = time.monotonic()
    for w in workers:
        w.start()
    results = [queue.get(timeout=seconds + 180) for _ in workers]
    for w in workers:
        w.join(30)
    elapsed = time.monotonic() - started

    def merged(key: str) -> list[float]:
        return sorted(x for r in results for x in r[key])

    receipt, lag, first = merged("receipt"), merged("stored_lag"), merged("first")
    settled, loop_lag = merged("receipt_settled"), merged("loop_lag")
    stored, produced = sum(merged("stored")), sum(merged("produced"))

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else 0.0

    sizes = [n for n in merged("received") if n]
    return {
        "load_generator_cores": sum(merged("cpu_s")) / elapsed,
        "stored": stored,
        "produced": produced,
        "seconds": elapsed,
        "load_seconds": seconds,
        "obs_per_s": stored / elapsed,
        # Answered as stored while the load ran (the rest was stored in the drain).
        "stored_in_load_per_s": sum(merged("stored_in_load")) / seconds,
        "requests": len(receipt),
        "p50_ms": pct(receipt, 0.50),
        "p99_ms": pct(receipt, 0.99),
        "max_ms": receipt[-1] * 1000 if receipt else 0.0,
        "settled_p50_ms": pct(settled, 0.50),
        "settled_p99_ms": pct(settled, 0.99),
        "settled_requests": len(settled),
        "load_loop_lag_p99_ms": pct(loop_lag, 0.99),
        "load_loop_lag_max_ms": loop_lag[-1] * 1000 if loop_lag else 0.0,
        "mean_ms": statistics.fmean(receipt) * 1000 if receipt else 0.0,
        "first_p50_ms": pct(first, 0.50),
        "first_max_ms": first[-1] * 1000 if first else 0.0,
        "stored_p50_ms": pct(lag, 0.50),
        "stored_p99_ms": pct(lag, 0.99),
        "stored_max_ms": lag[-1] * 1000 if lag else 0.0,
        "mean_batch": statistics.fmean(sizes) if sizes else 0,
        "offered_obs_per_s": rate * len(trials) if rate else None,
    }


def histogram_quantile(text: str, name: str, q: float) -> float | None:
    """The upper bound (ms) of the bucket holding quantile ``q`` of an exported histogram:
    the operator's own view, without the client's or the network's share."""
    buckets = []
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    return next(le * 1000 for le, count in buckets if count >= q * total)


# -- the collector tailing 1,000 lines/s ------------------------------------------------------


def run_collector(port: int, trial: str, seconds: float, rate: int) -> dict[str, Any]:
    shared = Path(tempfile.mkdtemp(prefix="tf-collector-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALFORGE_")}
    env.update(
        TRIALFORGE_INGEST_URL=f"http://127.0.0.1:{port}/v1/observations",
        TRIALFORGE_TOKEN=token(NS, trial),
        TRIALFORGE_NAMESPACE=NS,
        TRIALFORGE_TRIAL=trial,
        TRIALFORGE_SHARED_DIR=str(shared),
        TRIALFORGE_METRICS_SOURCE="stdout",
        TRIALFORGE_METRICS_FORMAT="json",
    )
    log = open(shared / "collector.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "trialforge.cli", "collector"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    time.sleep(1.0)
    cpu0, peak = cpu_seconds(proc.pid), rss_mb(proc.pid)
    started = time.monotonic()
    written = 0
    with open(shared / "stdout.log", "a") as out:
        while (now := time.monotonic()) < started + seconds:
            due = int((now - started) * rate)
            while written < due:
                out.write(json.dumps({"step": written, "loss": 1 / (written + 1), "acc": 0.5}))
                out.write("\nsome log line between the metrics\n" if written % 10 == 0 else "\n")
                written += 1
            out.flush()
            peak = max(peak, rss_mb(proc.pid))
            time.sleep(0.01)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(proc.pid) - cpu0
    (shared / "exit-code").write_text("0\n")
    code = proc.wait(120)
    log.close()
    text = (shared / "collector.log").read_text()
    shutil.rmtree(shared, ignore_errors=True)
    return {
        "lines_per_s": written / elapsed,
        "written": written,
        "cpu_percent": 100 * cpu / elapsed,
        "peak_rss_mb": peak,
        "exit": code,
        "summary": [ln for ln in text.splitlines() if "done:" in ln][-1:],
    }


# -- main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--collectors", type=int, default=100)
    parser.add_argument(
        "--batch", type=int, default=2000, help="observations per request (at most, with --rate)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=200,
        help="observations/s each trainer produces (0: closed loop, fixed --batch)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=0.5,
        help="seconds between one collector's requests, on average (the collector's "
        "TRIALFORGE_SEND_INTERVAL; each pause is drawn from 0.5-1.5 times it)",
    )
    parser.add_argument(
        "--fixed-schedule",
        action="store_true",
        help="each collector sends every --interval exactly, whatever the answer time (the "
        "collectors start together and so stay together), instead of the collector's own "
        "jittered pause after each answer",
    )
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--procs", type=int, default=2, help="load-generator processes")
    parser.add_argument("--tail-seconds", type=float, default=30)
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run the operator alone on CPU 0 and everything else (control plane, load, "
        "collector) on the other CPUs: the operator's pod has a core of its own",
    )
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting one")
    parser.add_argument(
        "--py-spy", help="py-spy binary: sample the operator during the load (collapsed stacks)"
    )
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()

    from kubernetes import client, config

    state = None
    if args.kubeconfig:
        kubeconfig = args.kubeconfig
    else:
        name = f"bench-ingest-{os.getpid()}"
        state = ROOT / "e2e" / ".state" / name
        print("starting a cluster ...", flush=True)
        sh(sys.executable, str(CLUSTER), "--name", name, "--dir", str(state), "up",
           "--nodes", "4", "--owner-pid", str(os.getpid()))  # fmt: skip
        kubeconfig = str(state / "kubeconfig")
    bin_dir = sh(sys.executable, str(CLUSTER), "build").strip().splitlines()[-1]
    kubectl = [str(Path(bin_dir) / "kubectl"), "--kubeconfig", kubeconfig]
    operator = None
    log_dir = Path(tempfile.mkdtemp(prefix="tf-bench-ingest-"))
    try:
        sh(*kubectl, "apply", "--server-side", "-f", str(ROOT / "crds"))
        sh(*kubectl, "wait", "--for=condition=Established",
           "crd/experiments.trialforge.io", "crd/trials.trialforge.io")  # fmt: skip
        subprocess.run([*kubectl, "create", "namespace", NS], capture_output=True)
        port = free_port()
        log = open(log_dir / "operator.log", "w")  # noqa: SIM115
        operator = subprocess.Popen(
            [sys.executable, "-m", "trialforge.cli", "operator", "--kubeconfig", kubeconfig,
             "-n", NS, "--lease-namespace", NS, "--port", str(port), "--listen", "127.0.0.1",
             "--ingest-url", f"http://127.0.0.1:{port}/v1/observations", "--log-format", "text"],
            env={**os.environ, "TRIALFORGE_INGEST_KEY": KEY}, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if json.loads(r.read()).get("leader"):
                        break
            except OSError:
                pass
            time.sleep(0.2)
        config.load_kube_config(config_file=kubeconfig)
        api = client.ApiClient()
        custom = client.CustomObjectsApi(api)
        sh(*kubectl, "apply", "-f", "-", input=json.dumps(experiment(args.collectors)))
        print(f"waiting for {args.collectors} running trials ...", flush=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            items = custom.list_namespaced_custom_object("trialforge.io", "v1alpha1", NS, "trials")[
                "items"
            ]
            running = [
                t["metadata"]["name"]
                for t in items
                if (t.get("status") or {}).get("phase") == "Running"
            ]
            if len(running) >= args.collectors:
                break
            time.sleep(1)
        else:
            raise RuntimeError(f"only {len(running)} trials running")
        time.sleep(3)  # let the reconciles settle
        trials = sorted(running)[: args.collectors - 1]
        tail_trial = sorted(running)[args.collectors - 1]
        # This cluster's own processes (other clusters may run on the machine).
        mine = pids_named(str(state)) if state is not None else []
        apiservers = [p for p in mine if p in pids_named("bin/kube-apiserver")]
        etcds = [p for p in mine if p in pids_named("bin/etcd ")]
        if args.pin:
            # The operator alone on CPU 0, as in a cluster where its pod has a core
            # of its own; the control plane, this process and the load (its children
            # from here on) on the others.
            others = set(range(1, os.cpu_count() or 2))
            pin(operator.pid, {0})
            for pid in mine:
                pin(pid, others)
            os.sched_setaffinity(0, others)
        op_cpu0 = cpu_seconds(operator.pid)
        api_cpu0 = sum(cpu_seconds(p) for p in apiservers)
        etcd_cpu0 = sum(cpu_seconds(p) for p in etcds)
        print(f"load: {len(trials)} collectors x batches of {args.batch} for {args.seconds}s",
              flush=True)  # fmt: skip
        spy = None
        if args.py_spy:
            spy = subprocess.Popen(
                [args.py_spy, "record", "--pid", str(operator.pid), "--duration",
                 str(int(args.seconds)), "--format", "raw", "--threads", "--nonblocking",
                 "--output", str(log_dir / "operator.stacks")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        load = run_load(
            port, trials, args.batch, args.seconds, args.procs, args.rate, args.interval,
            args.fixed_schedule,
        )  # fmt: skip
        load["pinned"] = bool(args.pin)
        if spy is not None:
            spy.wait(60)
            print(f"operator stacks: {log_dir / 'operator.stacks'}")
        op_cpu = cpu_seconds(operator.pid) - op_cpu0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            exported = r.read().decode()
        (log_dir / "metrics.txt").write_text(exported)
        load["operator_answer_p99_ms"] = histogram_quantile(
            exported, "trialforge_ingest_request_duration_seconds", 0.99
        )
        api_cpu = sum(cpu_seconds(p) for p in apiservers) - api_cpu0
        etcd_cpu = sum(cpu_seconds(p) for p in etcds) - etcd_cpu0
        load["operator_cpu_s"] = op_cpu
        load["operator_cpu_per_10k"] = op_cpu / load["stored"] * 10_000
        load["operator_cores"] = op_cpu / load["seconds"]
        load["obs_per_operator_core_s"] = load["stored"] / op_cpu if op_cpu else 0
        load["apiserver_cpu_per_10k"] = api_cpu / load["stored"] * 10_000
        load["etcd_cpu_per_10k"] = etcd_cpu / load["stored"] * 10_000
        load["operator_rss_mb"] = rss_mb(operator.pid)
        print(json.dumps(load, indent=2), flush=True)

        print(f"collector: tailing 1,000 lines/s for {args.tail_seconds}s ...", flush=True)
        tail = run_collector(port, tail_trial, args.tail_seconds, 1000)
        status = (
            custom.get_namespaced_custom_object(
                "trialforge.io", "v1alpha1", NS, "trials", tail_trial
            ).get("status")
            or {}
        )
        tail["stored"] = status.get("lastSequence")
        print(json.dumps(tail, indent=2), flush=True)
        result = {"load": load, "tail": tail, "args": vars(args)}
        (log_dir / "result.json").write_text(json.dumps(result, indent=2))
        if args.write:
            record(result)
        api.close()
    finally:
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(20)
            except subprocess.TimeoutExpired:
                operator.kill()
        if state is not None:
            subprocess.run([sys.executable, str(CLUSTER), "--name", state.name, "--dir",
                            str(state), "down"], capture_output=True)  # fmt: skip
        print(f"operator log: {log_dir / 'operator.log'}")
    return 0


def record(r: dict[str, Any]) -> None:
    load, tail, a = r["load"], r["tail"], r["args"]
    cpu = os.cpu_count()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")), platform.processor(),
    )  # fmt: skip
    interval = a["interval"]
    schedule = (
        f"a request every {interval:g} s, in step"
        if a.get("fixed_schedule")
        else f"the collector's pause of {(1 - SEND_JITTER) * interval:g}-"
        f"{(1 + SEND_JITTER) * interval:g} s between requests"
    )
    text = f"""
### Run: {a["collectors"]} collectors, {a["rate"]:.0f} obs/s each, {schedule}, {a["seconds"]:.0f} s{", operator pinned to CPU 0" if a["pin"] else ""}

Date: {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}. Command: `.venv/bin/python bench/ingest.py --seconds {a["seconds"]:.0f} --rate {a["rate"]:.0f} --tail-seconds {a["tail_seconds"]:.0f}{" --pin" if a["pin"] else ""}{" --fixed-schedule" if a.get("fixed_schedule") else ""}`.

Machine: {cpu} CPUs ({model}), Python {platform.python_version()}, shared with other sessions.

| figure | value | target |
|---|---|---|
| observations offered / s | {load["offered_obs_per_s"] or "closed loop"} | |
| observations answered as stored / s during the {load["load_seconds"]:.0f} s of load | {load["stored_in_load_per_s"]:,.0f} | >= 20,000 |
| observations stored / s, load + drain ({load["seconds"]:.1f} s) | {load["obs_per_s"]:,.0f} | |
| observations per request (mean) | {load["mean_batch"]:.0f} | |
| observations / s per operator CPU-second | {load["obs_per_operator_core_s"]:,.0f} | >= 20,000 on one core |
| answer (receipt ack) latency p50 / p99 / max, after each trial's first request | {load["p50_ms"]:.1f} / {load["p99_ms"]:.1f} / {load["max_ms"]:.0f} ms | p99 <= 20 ms |
| the same, from {SETTLED:.0f} s into the load on ({load["settled_requests"]:,} requests) | {load["settled_p50_ms"]:.1f} / {load["settled_p99_ms"]:.1f} ms | |
| a trial's first request (reads the Trial), p50 / max | {load["first_p50_ms"]:.0f} / {load["first_max_ms"]:.0f} ms | |
| sent → answered as stored in the Trial, p50 / p99 / max | {load["stored_p50_ms"]:.0f} / {load["stored_p99_ms"]:.0f} / {load["stored_max_ms"]:.0f} ms | |
| observations produced / stored | {load["produced"]:,} / {load["stored"]:,} | all |
| operator CPU per 10k observations | {load["operator_cpu_per_10k"]:.2f} s | |
| the operator's own answer time p99 (its histogram's bucket) | <= {load["operator_answer_p99_ms"]:.0f} ms | |
| load generator's CPU | {load["load_generator_cores"]:.2f} cores | |
| load generator's own event loop: wake-up delay p99 / max (in every answer time above) | {load["load_loop_lag_p99_ms"]:.1f} / {load["load_loop_lag_max_ms"]:.0f} ms | |
| apiserver / etcd CPU per 10k observations | {load["apiserver_cpu_per_10k"]:.2f} s / {load["etcd_cpu_per_10k"]:.2f} s | |
| operator cores used during the load | {load["operator_cores"]:.2f} | |
| requests (acks) | {load["requests"]:,} | |
| collector tailing {tail["lines_per_s"]:,.0f} lines/s: CPU | {tail["cpu_percent"]:.1f} % of a core | |
| collector peak RSS | {tail["peak_rss_mb"]:.1f} MB | <= 30 MB |
| collector: stored / written, exit code | {tail["stored"]} / {tail["written"]}, {tail["exit"]} | |
"""
    path = ROOT / "bench" / "RESULTS.md"
    with open(path, "a") as f:
        f.write(text)
    print(f"recorded in {path}")


if __name__ == "__main__":
    sys.exit(main())
