"""Ingest under attack (issue 18): legitimate collectors' answer times with and without a
load of bad requests.

A local control plane (e2e/cluster), the real `trialforge operator`, one Experiment whose
trials run on kwok, and --collectors legitimate collectors (bench/ingest.py's asyncio
collectors: the collector's protocol, --rate observations/s each, a request about every
--interval s). Two runs of --seconds each: the collectors alone, then the collectors
while --fuzzers threads send bad requests back to back (malformed JSON, forged and
foreign tokens, out-of-range sequence numbers, batches over the limit, 9 MiB bodies, a
flood of one trial) and --slowloris connections trickle headers that never end.
Measured: the legitimate answers' p50/p99 (receipt, the client's view) and the time until
stored, and what the bad requests were answered.

Run:  .venv/bin/python bench/ingest_fuzz.py [--collectors 20 --seconds 20] [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ingest as base  # bench/ingest.py: the cluster, the operator, the load

ROOT = base.ROOT
NS, KEY = base.NS, base.KEY


def _post(port: int, body: bytes, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/observations", data=body, method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code
    except OSError:
        return 0


def _raw_too_large(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(
            b"POST /v1/observations HTTP/1.1\r\nHost: x\r\nContent-Length: 9437184\r\n\r\n"
            + b" " * 65536
        )
        data = s.recv(4096)
    return int(data.split(b" ", 2)[1]) if data else 0


def bad_requests(victim: str, other: str) -> list[tuple[str, Any]]:
    obs = {"seq": 1, "step": 0, "time": 1.0, "metrics": {"loss": 1.0}}
    good = {"namespace": NS, "trial": victim, "token": base.token(NS, victim), "observations": []}

    def body(**kw: Any) -> bytes:
        return json.dumps({**good, **kw}).encode()

    return [
        ("malformed", lambda p: _post(p, b"{not json")),
        ("forged token", lambda p: _post(p, body(token="f" * 64))),
        ("foreign token", lambda p: _post(p, body(token=base.token(NS, other)))),
        ("negative seq", lambda p: _post(p, body(observations=[{**obs, "seq": -1}]))),
        ("5001 observations", lambda p: _post(p, body(observations=[obs] * 5001))),
        ("9 MiB body", _raw_too_large),
        ("flood (valid, empty)", lambda p: _post(p, body())),
    ]


def _fuzz_process(port: int, victim: str, other: str, threads: int, seconds: float,
                  slowloris: int, out: Any) -> None:  # fmt: skip
    until = time.monotonic() + seconds
    answers: dict[str, Counter[int]] = {}
    lock = threading.Lock()
    kinds = bad_requests(victim, other)

    def fuzzer(i: int) -> None:
        n = i
        while time.monotonic() < until:
            name, send = kinds[n % len(kinds)]
            code = send(port)
            with lock:
                answers.setdefault(name, Counter())[code] += 1
            n += 1

    def loris() -> None:
        socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(slowloris)]
        for s in socks:
            s.send(b"POST /v1/observations HTTP/1.1\r\nHost: x\r\n")
        while time.monotonic() < until:
            for s in socks:
                with contextlib.suppress(OSError):
                    s.send(b"X")
            time.sleep(0.5)
        for s in socks:
            s.close()

    workers = [threading.Thread(target=fuzzer, args=(i,)) for i in range(threads)]
    workers.append(threading.Thread(target=loris))
    for w in workers:
        w.start()
    for w in workers:
        w.join(seconds + 60)
    out.put({k: dict(v) for k, v in answers.items()})


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--collectors", type=int, default=20)
    parser.add_argument("--rate", type=float, default=20, help="observations/s per collector")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--fuzzers", type=int, default=4, help="threads sending bad requests")
    parser.add_argument("--slowloris", type=int, default=50, help="connections that never end")
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting one")
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()

    from kubernetes import client, config

    state = None
    if args.kubeconfig:
        kubeconfig = args.kubeconfig
    else:
        name = f"bench-fuzz-{os.getpid()}"
        state = ROOT / "e2e" / ".state" / name
        print("starting a cluster ...", flush=True)
        base.sh(sys.executable, str(base.CLUSTER), "--name", name, "--dir", str(state), "up",
                "--nodes", "2", "--owner-pid", str(os.getpid()))  # fmt: skip
        kubeconfig = str(state / "kubeconfig")
    bin_dir = base.sh(sys.executable, str(base.CLUSTER), "build").strip().splitlines()[-1]
    kubectl = [str(Path(bin_dir) / "kubectl"), "--kubeconfig", kubeconfig]
    log_dir = Path(tempfile.mkdtemp(prefix="tf-bench-fuzz-"))
    operator = None
    try:
        base.sh(*kubectl, "apply", "--server-side", "-f", str(ROOT / "crds"))
        base.sh(*kubectl, "wait", "--for=condition=Established",
                "crd/experiments.trialforge.io", "crd/trials.trialforge.io")  # fmt: skip
        subprocess.run([*kubectl, "create", "namespace", NS], capture_output=True)
        port = base.free_port()
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
        custom = client.CustomObjectsApi(client.ApiClient())
        # Two trials more than the collectors: the fuzz's victim and the foreign token's.
        total = args.collectors + 2
        base.sh(*kubectl, "apply", "-f", "-", input=json.dumps(base.experiment(total)))
        deadline = time.monotonic() + 300
        running: list[str] = []
        while time.monotonic() < deadline and len(running) < total:
            items = custom.list_namespaced_custom_object("trialforge.io", "v1alpha1", NS, "trials")[
                "items"
            ]
            running = sorted(t["metadata"]["name"] for t in items
                             if (t.get("status") or {}).get("phase") == "Running")  # fmt: skip
            time.sleep(1)
        if len(running) < total:
            raise RuntimeError(f"only {len(running)} trials running")
        time.sleep(3)
        victim, other, trials = running[0], running[1], running[2:]
        half = len(trials) // 2
        runs: dict[str, Any] = {}
        for label, group, fuzz in (("alone", trials[:half], False),
                                   ("under fuzz", trials[half:], True)):  # fmt: skip
            queue: Any = mp.get_context("fork").Queue()
            fuzzer = None
            if fuzz:
                fuzzer = mp.get_context("fork").Process(
                    target=_fuzz_process,
                    args=(port, victim, other, args.fuzzers, args.seconds, args.slowloris, queue),
                )
                fuzzer.start()
                time.sleep(1)  # the slowloris connections are open, the fuzz is going
            print(f"{label}: {len(group)} collectors for {args.seconds}s", flush=True)
            load = base.run_load(port, group, 2000, args.seconds, 1, args.rate, args.interval)
            if fuzzer is not None:
                load["fuzz"] = queue.get(timeout=args.seconds + 120)
                fuzzer.join(30)
            runs[label] = load
            print(json.dumps(load, indent=2), flush=True)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            exported = r.read().decode()
        rejected = {
            line.split('"')[1]: float(line.split()[-1])
            for line in exported.splitlines()
            if line.startswith("trialforge_observations_rejected_total{")
        }
        result = {"runs": runs, "rejected": rejected, "args": vars(args)}
        (log_dir / "result.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(rejected, indent=2))
        if args.write:
            record(result)
    finally:
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(20)
            except subprocess.TimeoutExpired:
                operator.kill()
        if state is not None:
            subprocess.run([sys.executable, str(base.CLUSTER), "--name", state.name, "--dir",
                            str(state), "down"], capture_output=True)  # fmt: skip
        print(f"operator log: {log_dir / 'operator.log'}")
    return 0


def record(r: dict[str, Any]) -> None:
    a, alone, fuzz = r["args"], r["runs"]["alone"], r["runs"]["under fuzz"]
    total = sum(sum(v.values()) for v in fuzz["fuzz"].values())
    answers = "; ".join(
        f"{k}: " + ", ".join(f"{n}x {code}" for code, n in sorted(v.items()))
        for k, v in fuzz["fuzz"].items()
    )
    text = f"""
## Ingest under a load of bad requests (issue 18, {time.strftime("%Y-%m-%d")})

Machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()};
the local control plane (kwok nodes) and the real operator on loopback.
{a["collectors"]} legitimate collectors in two halves ({a["rate"]:.0f} observations/s each, a
request about every {a["interval"]} s), {a["seconds"]:.0f} s each: one half alone, the other while
{a["fuzzers"]} threads sent {total} bad requests back to back and {a["slowloris"]} slowloris
connections trickled headers.

| legitimate collectors | alone | under the fuzz |
|---|---|---|
| requests answered | {alone["requests"]} | {fuzz["requests"]} |
| answer p50 | {alone["p50_ms"]:.1f} ms | {fuzz["p50_ms"]:.1f} ms |
| answer p99 | {alone["p99_ms"]:.1f} ms | {fuzz["p99_ms"]:.1f} ms |
| until stored, p50 / p99 | {alone["stored_p50_ms"]:.0f} / {alone["stored_p99_ms"]:.0f} ms | {fuzz["stored_p50_ms"]:.0f} / {fuzz["stored_p99_ms"]:.0f} ms |
| observations stored / produced | {alone["stored"]} / {alone["produced"]} | {fuzz["stored"]} / {fuzz["produced"]} |

The bad requests' answers (HTTP status; 0: no answer): {answers}.
Counted by the operator (`trialforge_observations_rejected_total`, both runs):
{", ".join(f"{k} {v:.0f}" for k, v in sorted(r["rejected"].items()))}.

```sh
.venv/bin/python bench/ingest_fuzz.py --collectors {a["collectors"]} --seconds {a["seconds"]:.0f} --write
```
"""
    with open(ROOT / "bench" / "RESULTS.md", "a") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
