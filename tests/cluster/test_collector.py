"""The metrics collector sidecar against the real operator on the real control plane
(issue 6).

On kwok the trainer container never runs, so each test starts the collector as a
real local process (`trialforge collector`) with what the pod would give it: the
environment the operator put in the pod spec, the trial's token read from the
Secret the operator created, and a shared directory where the test plays the
trainer (a tee'd stdout, a metrics file, pushes from `trialforge.report()`,
TensorBoard event files, and the exit-code marker the wrapper writes). The
operator is the real `trialforge operator` process; nothing is mocked.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clusterlib import REPO, KubeCluster
from operatorlib import (
    Cluster,
    OperatorProcess,
    experiment,
    token,
    with_template_annotations,
)

from trialforge.metrics import contract

pytestmark = pytest.mark.cluster

COLLECTOR_IMAGE = "registry.example/trialforge:test"


class OperatorWithCollector(OperatorProcess):
    """The operator, told to inject the collector sidecar into trial pods."""

    def command(self) -> list[str]:
        return [*super().command(), "--collector-image", COLLECTOR_IMAGE]


@pytest.fixture
def operator(cluster: KubeCluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    op = OperatorWithCollector(
        cluster.kubeconfig, namespace, tmp_path / "operator.log", identity=f"op-{namespace}"
    )
    try:
        op.start()
        yield op
    finally:
        op.stop()
        op.kill()


@pytest.fixture
def kube(cluster: KubeCluster, namespace: str, operator: OperatorProcess) -> Cluster:
    return Cluster(cluster, namespace, operator)


def scrape(op: OperatorProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.port}/metrics", timeout=5) as r:
        return r.read().decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from a Prometheus text exposition, or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if head.split("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return None


# -- the pod, as the collector sees it -----------------------------------------------------


class Pod:
    """One trial pod's shared volume and its collector process (a real subprocess)."""

    def __init__(
        self,
        kube: Cluster,
        op: OperatorProcess,
        trial: str,
        root: Path,
        tok: str | None = None,
        **env: str,
    ) -> None:
        self.kube, self.trial = kube, trial
        self.dir = root / trial
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env = self._pod_env(env)
        if tok is not None:
            self.env[contract.ENV_TOKEN] = tok
        self.env[contract.ENV_INGEST_URL] = op.ingest_url  # the pod's is the same URL
        self.env[contract.ENV_SHARED_DIR] = str(self.dir)
        self.env.setdefault(contract.ENV_FLUSH_TIMEOUT, "10")
        self.log = self.dir / "collector.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _pod_env(self, extra: dict[str, str]) -> dict[str, str]:
        """The collector's environment from the real pod spec and the real Secret."""
        kube = self.kube
        pod = kube.until(
            lambda: next(
                (p for p in kube.pods() if p.metadata.labels.get(LABEL) == self.trial), None
            ),
            60,
            f"a pod of {self.trial}",
        )
        sidecars = [c for c in pod.spec.init_containers or [] if c.name == "trialforge-collector"]
        kube.check(len(sidecars) == 1, f"no collector sidecar in {pod.metadata.name}: {pod.spec}")
        (sidecar,) = sidecars
        kube.check(sidecar.restart_policy == "Always", f"not a native sidecar: {sidecar}")
        env: dict[str, str] = {}
        for e in sidecar.env:
            if e.value is not None:
                env[e.name] = e.value
            elif e.value_from.secret_key_ref is not None:
                ref = e.value_from.secret_key_ref
                secret = kube.core.read_namespaced_secret(ref.name, kube.ns)
                env[e.name] = base64.b64decode(secret.data[ref.key]).decode()
            elif e.value_from.field_ref is not None:
                assert e.value_from.field_ref.field_path == "metadata.namespace"
                env[e.name] = kube.ns
        env.update(extra)
        return env

    def start(self) -> Pod:
        full = {k: v for k, v in os.environ.items() if not k.startswith("TRIALFORGE_")}
        full.update(self.env, PYTHONUNBUFFERED="1")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "trialforge.cli", "collector"],
                env=full,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        return self

    def write(self, text: str, name: str = contract.STDOUT_FILE) -> None:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(text)

    def trainer_exits(self, code: int = 0) -> None:
        (self.dir / contract.EXIT_FILE).write_text(f"{code}\n")

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the collector of {self.trial} did not exit:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


LABEL = "trialforge.io/trial"


def trial_status(kube: Cluster, name: str) -> dict[str, Any]:
    return kube.trial(name).get("status") or {}


def stored(kube: Cluster, name: str, n: int) -> bool:
    return int(trial_status(kube, name).get("lastSequence") or 0) >= n


# -- tests -------------------------------------------------------------------------------------


def test_every_source_and_format_reaches_the_trial_and_the_exporter(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster, tmp_path: Path
) -> None:
    name = "sources"
    xp = experiment(name, max_trials=6, parallelism=6, run_seconds="75", gpus=0)
    kube.create(xp)
    trials = [f"{name}-{i}" for i in range(6)]
    kube.until(lambda: len(kube.pods(name)) == 6, 60, "six pods")
    pod = kube.pods(name)[0]
    trainer = pod.spec.containers[0]
    kube.check(
        trainer.command[:2] == [contract.ENTRYPOINT, "--"], f"no entrypoint for stdout: {trainer}"
    )
    kube.check(
        any(v.name == "trialforge-shared" and v.empty_dir is not None for v in pod.spec.volumes),
        f"no shared emptyDir: {pod.spec.volumes}",
    )
    kube.until(
        lambda: all(p.status.phase == "Running" for p in kube.pods(name)), 60, "pods running"
    )

    n = 40
    regex = r"iter (?P<step>\d+) loss (?P<loss>\S+)"
    setups: list[tuple[str, dict[str, str]]] = [
        ("stdout json", {contract.ENV_METRICS_FORMAT: "json"}),
        ("stdout keyvalue", {contract.ENV_METRICS_FORMAT: "keyvalue"}),
        ("stdout regex", {contract.ENV_METRICS_FORMAT: "regex",
                          contract.ENV_METRICS_PATTERN: regex}),
        ("file json", {contract.ENV_METRICS_SOURCE: "file",
                       contract.ENV_METRICS_PATH: "out/metrics.jsonl"}),
        # the pod's collector listens on the pod's IP for the kubelet's probe; played
        # on this machine it keeps to loopback
        (
            "push",
            {
                contract.ENV_METRICS_SOURCE: "push",
                contract.ENV_PUSH_PORT: "0",
                contract.ENV_PUSH_LISTEN: "127.0.0.1",
            },
        ),
        ("tensorboard", {contract.ENV_METRICS_SOURCE: "tensorboard",
                         contract.ENV_METRICS_PATH: "tb"}),
    ]  # fmt: skip
    pods = [
        Pod(kube, operator, t, tmp_path / "pods", **env).start()
        for t, (_, env) in zip(trials, setups, strict=True)
    ]
    try:

        def loss(i: int, s: int) -> float:
            return round(1.0 / (s + 1) + i / 100, 6)

        # stdout, three formats (with a partial line and plain log lines between)
        for s in range(n):
            pods[0].write(f'{{"step": {s}, "loss": {loss(0, s)}}}\nprogress...\n')
            pods[1].write(f"epoch 1 | step={s} loss={loss(1, s)}\n")
            pods[2].write(f"iter {s} loss {loss(2, s)}\n")
        # a file, rotated half-way, its last line written in two pieces
        for s in range(n):
            if s == n // 2:
                # Rotated once the collector follows the file (as the sidecar, which starts
                # before the trainer, does); two lines go to the old file after the rename.
                kube.until(lambda: stored(kube, trials[3], n // 2 - 2), 60, "the first half")
                os.rename(pods[3].dir / "out/metrics.jsonl", pods[3].dir / "out/metrics.jsonl.1")
            target = "out/metrics.jsonl.1" if n // 2 <= s < n // 2 + 2 else "out/metrics.jsonl"
            pods[3].write(json.dumps({"step": s, "loss": loss(3, s)}), target)
            pods[3].write("\n", target)
        # pushes from trialforge.report() in a trainer process
        port = _push_port(pods[4])
        trainer_code = (
            "import trialforge\n"
            f"for s in range({n}): trialforge.report(step=s, loss=round(1.0 / (s + 1) + 0.04, 6))\n"
        )
        env = dict(os.environ, **{contract.ENV_REPORT_URL: contract.report_url(port)})
        subprocess.run([sys.executable, "-c", trainer_code], env=env, check=True, timeout=60)
        # TensorBoard event files, written with TensorBoard's own writer
        _tensorboard(pods[5].dir / "tb", [(s, loss(5, s)) for s in range(n)])

        for t in trials:
            kube.until(lambda t=t: stored(kube, t, n), 60, f"{t} to store {n} observations")

        # While they run, each trial's latest values are exported (set by the next
        # reconcile, which follows stored batches within a second).
        def exported() -> bool:
            text = scrape(operator)
            return all(
                sample(text, "trialforge_trial_metric", trial=t, metric="loss")
                == pytest.approx(loss(i, n - 1), rel=1e-6)  # TensorBoard keeps float32
                for i, t in enumerate(trials)
            )

        kube.until(exported, 30, "each running trial's latest loss in /metrics")
        text = scrape(operator)
        kube.check(
            sample(text, "trialforge_trials", experiment=name, phase="Running") == 6,
            "trialforge_trials{phase=Running} is not 6",
        )
        for p in pods:
            p.trainer_exits(0)
        for p, (what, _) in zip(pods, setups, strict=True):
            code = p.wait(60)
            kube.check(code == 0, f"{what}: collector exited {code}\n{p.log_text()}")
        for i, (t, (what, _)) in enumerate(zip(trials, setups, strict=True)):
            status = trial_status(kube, t)
            steps = [pt["step"] for pt in status["history"]["loss"]]
            kube.check(steps == list(range(n)), f"{what}: history steps {steps}")
            values = [pt["value"] for pt in status["history"]["loss"]]
            kube.check(
                values == pytest.approx([loss(i, s) for s in range(n)], rel=1e-6),
                f"{what}: values {values}",
            )
            kube.check(status["lastSequence"] == n, f"{what}: lastSequence {status}")
            kube.check(status["metrics"]["loss"]["count"] == n, f"{what}: count {status}")
        kube.check("junk" in pods[0].log_text(), "the stdout collector reported no junk count")
        kube.check(
            re.search(r"\b40 junk\b", pods[0].log_text()) is not None,
            f"the 40 'progress...' lines were not counted as junk:\n{pods[0].log_text()}",
        )

        # The pods end (kwok), the trials conclude from what was stored: series go.
        kube.until(lambda: kube.finished(name), 90, f"{name} to finish")
        for i, t in enumerate(trials):
            status = trial_status(kube, t)
            kube.check(
                status["phase"] == "Succeeded"
                and status["objective"] == pytest.approx(loss(i, n - 1), rel=1e-6),
                f"{t}: {status}",
            )
        kube.until(
            lambda: sample(scrape(operator), "trialforge_trial_metric", experiment=name) is None,
            30,
            "trial metric series to go once the trials ended",
        )
        text = scrape(operator)
        kube.check(
            sample(text, "trialforge_trials", experiment=name, phase="Succeeded") == 6,
            "trialforge_trials{phase=Succeeded} is not 6",
        )
        best = sample(text, "trialforge_experiment_best_objective", experiment=name)
        kube.check(best == loss(0, n - 1), f"best objective {best}")
        kube.check((sample(text, "trialforge_observations_ingested_total") or 0) >= 6 * n, text)
        kube.check((sample(text, "trialforge_status_patches_total", kind="Trial") or 0) > 0, text)
        kube.check(sample(text, "trialforge_leader") == 1, "trialforge_leader is not 1")
        # A deleted experiment takes its series with it.
        cluster.kubectl("-n", namespace, "delete", "experiment", name, "--wait=false")
        kube.until(
            lambda: sample(scrape(operator), "trialforge_trials", experiment=name) is None,
            60,
            "the deleted experiment's series to go",
        )
    finally:
        for p in pods:
            p.stop()


def _push_port(pod: Pod, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"push server on 127\.0\.0\.1:(\d+)", pod.log_text())
        if m:
            return int(m.group(1))
        time.sleep(0.1)
    pytest.fail(f"the push server did not start:\n{pod.log_text()}")


def _tensorboard(logdir: Path, points: list[tuple[int, float]]) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(logdir))
    for step, value in points:
        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag="loss", simple_value=value)]
        )
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
    writer.close()


def test_operator_sigkilled_while_a_trial_reports_loses_and_repeats_nothing(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster, tmp_path: Path
) -> None:
    name = "crash"
    kube.create(experiment(name, max_trials=1, run_seconds="90", gpus=0))
    trial = f"{name}-0"
    kube.until(lambda: any(p.status.phase == "Running" for p in kube.pods(name)), 60, "pod runs")
    pod = Pod(
        kube, operator, trial, tmp_path / "pods",
        **{contract.ENV_BATCH_SIZE: "50", contract.ENV_METRICS_FORMAT: "keyvalue"},
    ).start()  # fmt: skip
    total = 3000
    done = threading.Event()

    def trainer() -> None:
        for s in range(total):
            pod.write(f"step={s} loss={1.0 / (s + 1):.8f} acc={s / total:.6f}\n")
            if s % 100 == 99:
                time.sleep(0.05)
        done.set()

    writer = threading.Thread(target=trainer, daemon=True)
    try:
        writer.start()
        kube.until(lambda: stored(kube, trial, 300), 60, "the first observations to be stored")
        operator.kill()  # SIGKILL while the trial reports
        before = int(trial_status(kube, trial).get("lastSequence") or 0)
        time.sleep(3)  # the collector keeps reading and buffering, and retries with backoff
        operator.start()
        done.wait(120)
        pod.trainer_exits(0)
        code = pod.wait(90)
        kube.check(code == 0, f"collector exited {code}\n{pod.log_text()}")
    finally:
        pod.stop()
    status = trial_status(kube, trial)
    kube.check(before < total, f"the operator was killed after everything was stored ({before})")
    kube.check(status["lastSequence"] == total, f"lastSequence {status.get('lastSequence')}")
    # Exactly once: the per-metric count is incremented once per stored observation.
    kube.check(status["metrics"]["loss"]["count"] == total, f"count {status['metrics']}")
    last_acc = round((total - 1) / total, 6)
    kube.check(status["metrics"]["acc"]["latest"] == last_acc, f"{status['metrics']}")
    steps = [p["step"] for p in status["history"]["loss"]]
    kube.check(steps == sorted(set(steps)), f"history out of order or repeated: {steps}")
    kube.check(steps[0] == 0 and steps[-1] == total - 1 and len(steps) == 100, f"{steps}")
    kube.check(
        "ingest" in pod.log_text() or "unreachable" in pod.log_text() or before == 0,
        "the collector never noticed the operator was down",
    )


def test_forged_and_foreign_tokens_are_refused_and_counted_and_junk_is_not_fatal(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster, tmp_path: Path
) -> None:
    name = "tokens"
    kube.create(experiment(name, max_trials=2, parallelism=2, run_seconds="60", gpus=0))
    a, b = f"{name}-0", f"{name}-1"
    kube.until(lambda: len(kube.pods(name)) == 2, 60, "two pods")
    rejected = sample(
        scrape(operator), "trialforge_observations_rejected_total", reason="bad_token"
    )
    quick = {contract.ENV_FLUSH_TIMEOUT: "2"}
    forged = Pod(kube, operator, a, tmp_path / "forged", tok="0" * 64, **quick)
    foreign = Pod(
        kube, operator, a, tmp_path / "foreign",
        tok=token(operator.key, namespace, b), **quick,
    )  # fmt: skip
    for p in (forged, foreign):
        p.write('{"step": 0, "loss": 123}\n')
        p.trainer_exits(0)
        p.start()
    for p in (forged, foreign):
        code = p.wait(60)
        kube.check(code == 1, f"a collector with a bad token exited {code}\n{p.log_text()}")
        kube.check("403" in p.log_text(), f"no 403 in the collector log:\n{p.log_text()}")
    text = scrape(operator)
    after = sample(text, "trialforge_observations_rejected_total", reason="bad_token") or 0
    kube.check(after >= (rejected or 0) + 2, f"bad tokens not counted: {rejected} -> {after}")
    kube.check("lastSequence" not in trial_status(kube, a), f"{a} took forged data")

    # The genuine collector, in a log full of junk: counted, and the rest arrives.
    real = Pod(kube, operator, a, tmp_path / "real")
    real.write("Traceback (most recent call last):\n{not json}\n" + "\x00\xff garbage\n")
    real.write(
        '{"step": 0, "loss": 1.5}\n[1, 2]\n{"step": "x", "loss": 1}\n{"step": 1, "loss": 1.25}'
    )
    real.trainer_exits(0)
    real.start()
    code = real.wait(60)
    kube.check(code == 0, f"collector exited {code}\n{real.log_text()}")
    kube.check(re.search(r"\b5 junk\b", real.log_text()) is not None, real.log_text())
    status = trial_status(kube, a)
    kube.check(status["lastSequence"] == 2, f"{status}")
    kube.check([p["value"] for p in status["history"]["loss"]] == [1.5, 1.25], f"{status}")


def test_a_hopeless_trial_is_pruned_end_to_end(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster, tmp_path: Path
) -> None:
    name = "prune"
    xp = experiment(
        name,
        max_trials=3,
        parallelism=1,
        run_seconds="30",
        gpus=0,
        early_stopping={
            "algorithm": "median",
            "settings": {"nStartupTrials": 2, "nWarmupSteps": 0},
        },
    )
    kube.create(with_template_annotations(xp, {}))
    pods: dict[str, Pod] = {}
    curves = {0: [0.5, 0.4, 0.3], 1: [0.6, 0.5, 0.4], 2: [50.0, 60.0, 70.0]}

    def run_trial(index: int) -> Pod:
        t = f"{name}-{index}"
        kube.until(
            lambda: any(
                p.status.phase == "Running" and p.metadata.labels.get(LABEL) == t
                for p in kube.pods(name)
            ),
            90,
            f"{t} runs",
        )
        pod = Pod(kube, operator, t, tmp_path / "pods").start()
        pods[t] = pod
        for step, value in enumerate(curves[index]):
            pod.write(json.dumps({"step": step, "loss": value}) + "\n")
        kube.until(lambda: stored(kube, t, 3) or kube.trial(t)["status"].get("phase") == "Pruned",
                   60, f"{t} reports")  # fmt: skip
        return pod

    try:
        for index in (0, 1):
            pod = run_trial(index)
            pod.trainer_exits(0)
            kube.check(pod.wait(60) == 0, pod.log_text())
            t = f"{name}-{index}"
            kube.until(
                lambda t=t: trial_status(kube, t).get("phase") == "Succeeded", 60, f"{t} succeeds"
            )
        bad = f"{name}-2"
        pod = run_trial(2)
        status = kube.until(
            lambda: (s := trial_status(kube, bad)).get("phase") == "Pruned" and s, 60, "pruned"
        )
        kube.check(status["reason"] == "EarlyStopped", f"{status}")
        kube.until(
            lambda: not [j for j in kube.jobs(name) if j.metadata.name == bad
                         and not j.metadata.deletion_timestamp],
            60, "the pruned trial's Job to be deleted",
        )  # fmt: skip
        # The kubelet stops the sidecar of the deleted pod: it delivers what it can and exits.
        pod.write('{"step": 3, "loss": 80}\n')
        assert pod.proc is not None
        pod.proc.send_signal(signal.SIGTERM)
        code = pod.wait(60)
        kube.check(code == 0, f"the pruned trial's collector exited {code}\n{pod.log_text()}")
        kube.check("has ended" in pod.log_text(), pod.log_text())
        kube.until(lambda: kube.finished(name), 90, f"{name} to finish")
    finally:
        for p in pods.values():
            p.stop()
