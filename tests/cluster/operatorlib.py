"""Helpers for the operator tests: the operator as a real subprocess, a reporter that
plays the metrics collector against the ingest endpoint, and diagnostics.

Nothing here fakes the cluster: the operator talks to the real control plane of
conftest.py, and the reporter posts to the operator's real HTTP endpoint exactly
as the collector sidecar will.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from clusterlib import REPO, KubeCluster, wait_for

from trialforge.metrics.contract import Reason, ingest_token

GROUP, VERSION = "trialforge.io", "v1alpha1"
LABEL_EXPERIMENT = "trialforge.io/experiment"
LABEL_TRIAL = "trialforge.io/trial"
IMAGE = "registry.example/trainer:1.0"
TERMINAL = ("Succeeded", "Failed", "Pruned", "Cancelled")
INGEST_KEY = "test-ingest-key-0123456789"

# A trial's reported curve: (step, metrics) pairs, or None to report nothing (yet).
Curve = Callable[[dict[str, Any]], list[tuple[int, dict[str, float]]] | None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token(key: str, namespace: str, trial: str) -> str:
    """The trial's ingest token, as the operator derives it (the sidecar contract)."""
    return ingest_token(key.encode(), namespace, trial)


# -- the operator process ---------------------------------------------------------------


@dataclass
class OperatorProcess:
    """`trialforge operator` as a subprocess; its output goes to ``log_path``."""

    kubeconfig: Path
    namespace: str
    log_path: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"  # where it listens; the real node's pods reach its gateway address
    identity: str | None = None
    key: str = INGEST_KEY
    resync: float = 5.0
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def ingest_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1/observations"

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "trialforge.cli", "operator",
            "--kubeconfig", str(self.kubeconfig),
            "--namespace", self.namespace,
            "--port", str(self.port),
            "--listen", self.host,
            "--ingest-url", self.ingest_url,
            "--lease-namespace", self.namespace,
            "--resync", str(self.resync),
            "--log-format", "text",
        ]  # fmt: skip
        if self.identity:
            cmd += ["--identity", self.identity]
        return cmd + self.extra_args

    def start(self, wait_leader: bool = True, timeout: float = 60) -> OperatorProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = dict(os.environ, TRIALFORGE_INGEST_KEY=self.key, PYTHONUNBUFFERED="1")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO
            )
        self.wait_healthy(timeout)
        if wait_leader:
            self.wait_leader(timeout)
        return self

    def healthz(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.port}/healthz", timeout=2) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"the operator exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.healthz() is not None:
                return
            time.sleep(0.2)
        pytest.fail(f"the operator's /healthz did not answer in {timeout}s:\n{self.log_tail()}")

    def wait_leader(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.healthz() or {}).get("leader"):
                return
            time.sleep(0.2)
        pytest.fail(f"the operator did not become leader in {timeout}s:\n{self.log_tail()}")

    def reconciles(self) -> int:
        """How many reconciles this operator has finished (the count its /metrics serves)."""
        url = f"http://{self.host}:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        for line in text.splitlines():
            if line.startswith("trialforge_reconcile_duration_seconds_count "):
                return int(float(line.split()[1]))
        raise AssertionError(f"no reconcile count in {url}")

    def wait_reconciles(self, more: int = 2, timeout: float = 60) -> None:
        """Until ``more`` reconciles have finished after now: the last of them started
        after the call, and saw what the cluster held then."""
        target = self.reconciles() + more
        wait_for(lambda: self.reconciles() >= target, timeout, what=f"{more} more reconciles")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no lease release — a crash."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> None:
        if not self.alive:
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, identity: str | None = None, wait_leader: bool = True) -> None:
        self.stop()
        if identity is not None:
            self.identity = identity
        self.start(wait_leader=wait_leader)

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no operator log)"
        return f"--- operator log {self.log_path} (last {lines} lines) ---\n" + "\n".join(
            text[-lines:]
        )


# -- talking to the ingest endpoint -----------------------------------------------------


@contextlib.contextmanager
def started(op: OperatorProcess) -> Iterator[OperatorProcess]:
    """Run ``op`` for the block; always stop it (and kill what did not stop)."""
    try:
        op.start()
        yield op
    finally:
        op.stop()
        op.kill()


def post(port: int, payload: Any) -> tuple[int, dict[str, Any]]:
    data = json.dumps(payload).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/observations",
        data=data,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body or b"{}")
        except ValueError:
            return e.code, {"raw": body.decode(errors="replace")}


def batch(
    namespace: str,
    trial: str,
    points: list[tuple[int, dict[str, float]]],
    key: str = INGEST_KEY,
    first_seq: int = 1,
    tok: str | None = None,
    wait: float | None = None,
) -> dict[str, Any]:
    """A collector's request body: numbered observations with the trial's token
    (``wait``: answer once what the operator received is stored)."""
    now = time.time()
    body: dict[str, Any] = {
        "namespace": namespace,
        "trial": trial,
        "token": tok if tok is not None else token(key, namespace, trial),
        "observations": [
            {"seq": first_seq + i, "step": step, "time": now + i * 0.001, "metrics": metrics}
            for i, (step, metrics) in enumerate(points)
        ],
    }
    if wait is not None:
        body["wait"] = wait
    return body


def finite_json(metrics: dict[str, float]) -> dict[str, Any]:
    """NaN/inf as the strings the collector sends (JSON has no NaN)."""
    return {k: (v if v == v and abs(v) != float("inf") else str(v)) for k, v in metrics.items()}


class Reporter(threading.Thread):
    """Plays the collector: for each trial whose pod runs, POSTs its curve once.

    ``curve(trial)`` decides what a trial reports (from its parameters, so tests
    are deterministic). Every response is kept in ``answers[trial]``.
    """

    def __init__(
        self,
        cluster: KubeCluster,
        namespace: str,
        port: int | Callable[[], int],
        curve: Curve,
        key: str = INGEST_KEY,
    ) -> None:
        super().__init__(name=f"reporter-{namespace}", daemon=True)
        self.cluster = cluster
        self.namespace = namespace
        self._port = port
        self.curve = curve
        self.key = key
        self.answers: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self.done: set[str] = set()
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    @property
    def port(self) -> int:
        return self._port() if callable(self._port) else self._port

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)

    def __enter__(self) -> Reporter:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def run(self) -> None:
        from kubernetes import client, config

        api_client = config.new_client_from_config(config_file=str(self.cluster.kubeconfig))
        custom = client.CustomObjectsApi(api_client)
        core = client.CoreV1Api(api_client)
        try:
            while not self._stop_event.is_set():
                try:
                    self._round(custom, core)
                except Exception as e:  # keep playing the collector; report at the end
                    self.errors.append(f"{type(e).__name__}: {e}")
                self._stop_event.wait(0.2)
        finally:
            api_client.close()

    def _round(self, custom: Any, core: Any) -> None:
        trials = custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "trials")[
            "items"
        ]
        pods = core.list_namespaced_pod(self.namespace, label_selector=LABEL_TRIAL).items
        running = {
            (p.metadata.labels or {}).get(LABEL_TRIAL)
            for p in pods
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp
        }
        for trial in trials:
            name = trial["metadata"]["name"]
            phase = (trial.get("status") or {}).get("phase")
            if name in self.done:
                continue
            # Like the collector, a batch once begun is re-sent until it is stored
            # (or the trial has ended), even after the pod stopped running.
            begun = name in self.answers and phase not in TERMINAL
            if name not in running and phase != "Running" and not begun:
                continue
            points = self.curve(trial)
            if points is None:
                continue
            body = batch(
                self.namespace,
                name,
                [(s, finite_json(m)) for s, m in points],
                key=self.key,
                wait=2.0,
            )
            try:
                code, answer = post(self.port, body)
            except OSError as e:  # the operator is down (a restart test): try again
                self.answers.setdefault(name, []).append((0, {"error": str(e)}))
                continue
            self.answers.setdefault(name, []).append((code, answer))
            if code == 200 and answer.get("stored") == len(points):
                self.done.add(name)
            elif answer.get("reason") == Reason.TRIAL_ENDED:
                self.done.add(name)  # too late; the test will see it in the Trial


# -- building experiments ---------------------------------------------------------------


def experiment(
    name: str,
    *,
    max_trials: int = 3,
    parallelism: int = 1,
    max_failed: int | None = None,
    parameters: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    run_seconds: str = "3",
    retries: int = 0,
    workers: int = 1,
    gpus: int = 1,
    queue: str | None = None,
    early_stopping: dict[str, Any] | None = None,
    search: dict[str, Any] | None = None,
    timeout: str | None = None,
    metric: str = "loss",
    direction: str = "minimize",
) -> dict[str, Any]:
    ann = {"trialforge.io/kwok-run-seconds": run_seconds}
    ann.update(annotations or {})
    container: dict[str, Any] = {
        "name": "trainer",
        "image": IMAGE,
        "command": ["python", "train.py", "--x=${params.x}"],
    }
    if gpus:
        # A number, as users write it (the operator turns it into a Quantity string).
        container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    budget: dict[str, Any] = {"maxTrials": max_trials, "parallelism": parallelism}
    if max_failed is not None:
        budget["maxFailedTrials"] = max_failed
    trial: dict[str, Any] = {
        "workers": workers,
        "retries": retries,
        "template": {
            "metadata": {"annotations": ann},
            "spec": {
                "nodeSelector": {"type": "kwok"},
                "terminationGracePeriodSeconds": 1,
                "containers": [container],
            },
        },
    }
    if timeout:
        trial["timeout"] = timeout
    spec: dict[str, Any] = {
        "objective": {"metric": metric, "direction": direction},
        "parameters": parameters or [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
        "search": search or {"algorithm": "random", "seed": 7},
        "budget": budget,
        "trial": trial,
    }
    if early_stopping:
        spec["earlyStopping"] = early_stopping
    if queue:
        spec["queue"] = queue
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Experiment",
        "metadata": {"name": name},
        "spec": spec,
    }


def with_template_annotations(xp: dict[str, Any], extra: dict[str, str]) -> dict[str, Any]:
    xp = copy.deepcopy(xp)
    xp["spec"]["trial"]["template"]["metadata"]["annotations"].update(extra)
    return xp


# -- reading the cluster ----------------------------------------------------------------


class Cluster:
    """Reads of one test namespace, with the diagnostics a failure message needs."""

    def __init__(self, cluster: KubeCluster, namespace: str, op: OperatorProcess | None) -> None:
        from kubernetes import client

        self.c = cluster
        self.ns = namespace
        self.op = op
        self.custom = client.CustomObjectsApi(cluster.api_client)
        self.core = cluster.core
        self.batch = cluster.batch
        self.coordination = client.CoordinationV1Api(cluster.api_client)

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.c.kubectl("-n", self.ns, "create", "-f", "-", input=json.dumps(obj))
        return self.experiment(obj["metadata"]["name"]) or {}

    def experiment(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException

        try:
            return self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.ns, "experiments", name
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_experiment(self, name: str, patch: dict[str, Any]) -> None:
        self.c.kubectl(
            "-n", self.ns, "patch", "experiment", name, "--type=merge", "-p", json.dumps(patch)
        )

    def trials(self, experiment: str | None = None) -> list[dict[str, Any]]:
        sel = f"{LABEL_EXPERIMENT}={experiment}" if experiment else ""
        items = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.ns, "trials", label_selector=sel
        )["items"]
        return sorted(items, key=lambda t: t["metadata"]["name"])

    def trial(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, "trials", name)

    def jobs(self, experiment: str | None = None) -> list[Any]:
        sel = f"{LABEL_EXPERIMENT}={experiment}" if experiment else ""
        return self.batch.list_namespaced_job(self.ns, label_selector=sel).items

    def active_jobs(self, experiment: str | None = None) -> list[Any]:
        """Jobs not finished and not being deleted: the trials holding a slot."""
        out = []
        for j in self.jobs(experiment):
            if j.metadata.deletion_timestamp:
                continue
            conds = {c.type for c in j.status.conditions or [] if c.status == "True"}
            if not conds & {"Complete", "Failed"}:
                out.append(j)
        return out

    def pods(self, experiment: str | None = None) -> list[Any]:
        sel = f"{LABEL_EXPERIMENT}={experiment}" if experiment else ""
        return self.core.list_namespaced_pod(self.ns, label_selector=sel).items

    def events(self, reason: str | None = None) -> list[Any]:
        items = self.core.list_namespaced_event(self.ns).items
        return [e for e in items if reason is None or e.reason == reason]

    def diagnostics(self) -> str:
        parts = []
        for args in (
            ("get", "xp,trials,jobs,pods,services", "-o", "wide"),
            ("get", "events", "--sort-by=.lastTimestamp"),
            ("get", "xp", "-o", "yaml"),
        ):
            proc = self.c.kubectl("-n", self.ns, *args, check=False, timeout=30)
            text = (proc.stdout + proc.stderr).splitlines()
            parts.append(f"--- kubectl -n {self.ns} {' '.join(args)} ---\n" + "\n".join(text[-60:]))
        if self.op is not None:
            parts.append(self.op.log_tail())
        return "\n".join(parts)

    def until(
        self, predicate: Callable[[], Any], timeout: float = 60, what: str = "condition"
    ) -> Any:
        """Poll until predicate() is truthy; fail with the namespace's state otherwise."""
        return wait_for(predicate, timeout, what=what, diagnostics=self.diagnostics)

    def check(self, ok: Any, message: str) -> None:
        if not ok:
            pytest.fail(f"{message}\n{self.diagnostics()}", pytrace=False)

    def phase(self, name: str) -> str | None:
        return ((self.experiment(name) or {}).get("status") or {}).get("phase")

    def finished(self, name: str) -> dict[str, Any] | None:
        status = (self.experiment(name) or {}).get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed") and status.get("completionTime"):
            return status
        return None


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


@contextlib.contextmanager
def sampling(fn: Callable[[], None], every: float = 0.2) -> Any:
    """Call fn() in a background thread until the block ends (sampling a quantity)."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                fn()
            except Exception as e:
                errors.append(e)
            stop.wait(every)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield errors
    finally:
        stop.set()
        t.join(10)
