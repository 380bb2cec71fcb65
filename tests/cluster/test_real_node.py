"""Trial pods on the real node `real-0` (issue 21): real containers, decided by a real kubelet.

The session's cluster is started with `e2e/cluster up --real-node` when a test of
this file is selected (tests/cluster/conftest.py): a kubelet, containerd + runc,
the CNI bridge, CoreDNS and kube-proxy beside the kwok nodes, and the images
trialforge/operator:dev and trialforge/trainer:dev built from images/ with
buildah and imported into the node's containerd. The operator runs as a local
process listening on the bridge's gateway address, where the trial pods'
collector sidecars reach its ingest endpoint. Nothing here is scripted: what the
pods do is what the containers did.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clusterlib import KubeCluster, wait_for
from operatorlib import GROUP, VERSION, Cluster, OperatorProcess, started

pytestmark = [pytest.mark.cluster, pytest.mark.realnode]

import tfnode  # noqa: E402  (e2e/ is on sys.path through clusterlib)

OPERATOR_IMAGE = "trialforge/operator:dev"
TRAINER_IMAGE = "trialforge/trainer:dev"
BUSYBOX = "trialforge.local/busybox:1"


class RealNodeOperator(OperatorProcess):
    """The operator on the bridge's gateway, injecting the collector from the operator image."""

    def command(self) -> list[str]:
        return [*super().command(), "--collector-image", OPERATOR_IMAGE]


@pytest.fixture(scope="session")
def real_node(cluster: KubeCluster) -> tfnode.RealNode:
    import tfcluster
    import tfimages

    assert cluster.state_dir is not None, "the real node needs the session's own cluster"
    node = tfnode.RealNode(tfcluster.Cluster(cluster.state_dir, cluster.name or ""))
    assert node.ready(), f"{tfnode.NODE_NAME} is not Ready"
    for ref, tar in tfimages.image_tars().items():
        node.load_image(tar, "docker.io/" + ref if ref.count("/") < 2 else ref)
    return node


@pytest.fixture
def operator(
    cluster: KubeCluster, real_node: tfnode.RealNode, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    op = RealNodeOperator(
        cluster.kubeconfig,
        namespace,
        tmp_path / "operator.log",
        host=tfnode.GATEWAY,
        identity=f"op-{namespace}",
    )
    with started(op):
        yield op


@pytest.fixture
def kube(cluster: KubeCluster, namespace: str, operator: OperatorProcess) -> Cluster:
    return Cluster(cluster, namespace, operator)


def on_real_node(spec: dict[str, Any]) -> dict[str, Any]:
    """A pod spec pinned to real-0 (it tolerates the node's taint)."""
    spec = dict(spec)
    spec["nodeSelector"] = {"kubernetes.io/hostname": tfnode.NODE_NAME}
    spec["tolerations"] = [tfnode.TOLERATION]
    return spec


def real_experiment(
    name: str,
    command: list[str],
    *,
    image: str = TRAINER_IMAGE,
    metric: str = "loss",
    direction: str = "minimize",
    parameters: list[dict[str, Any]] | None = None,
    max_trials: int = 1,
    parallelism: int = 1,
    metrics: dict[str, Any] | None = None,
    early_stopping: dict[str, Any] | None = None,
    extra_spec: dict[str, Any] | None = None,
    container: dict[str, Any] | None = None,
    trial: dict[str, Any] | None = None,
    grace: int = 60,
) -> dict[str, Any]:
    ctr = {"name": "trainer", "image": image, "imagePullPolicy": "Never", "command": command}
    ctr.update(container or {})
    spec: dict[str, Any] = {
        "objective": {"metric": metric, "direction": direction},
        "parameters": parameters or [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
        "search": {"algorithm": "random", "seed": 3},
        "budget": {"maxTrials": max_trials, "parallelism": parallelism, "maxFailedTrials": 5},
        "trial": {
            "retries": 0,
            "timeout": "5m",
            "metrics": metrics or {"source": "stdout", "format": "json"},
            "template": {
                "spec": on_real_node({"terminationGracePeriodSeconds": grace, "containers": [ctr]})
            },
            **(trial or {}),
        },
    }
    if early_stopping:
        spec["earlyStopping"] = early_stopping
    spec.update(extra_spec or {})
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Experiment",
        "metadata": {"name": name},
        "spec": spec,
    }


def pod_log(kube: Cluster, pod: str, container: str = "trainer") -> str:
    return kube.c.kubectl("-n", kube.ns, "logs", pod, "-c", container, timeout=30).stdout


class PodWatch(threading.Thread):
    """Every status the trial pods of a namespace had, as the API server sent them
    (a deleted pod's last statuses are gone once it is; this keeps them)."""

    def __init__(self, kube: Cluster) -> None:
        super().__init__(daemon=True)
        self.kube = kube
        self.seen: dict[str, list[Any]] = {}
        self._done = threading.Event()  # not _stop: threading.Thread has one

    def run(self) -> None:
        from kubernetes import watch

        while not self._done.is_set():
            w = watch.Watch()
            for ev in w.stream(self.kube.core.list_namespaced_pod, self.kube.ns, timeout_seconds=5):
                pod = ev["object"]
                self.seen.setdefault(pod.metadata.name, []).append(pod)
                if self._done.is_set():
                    w.stop()
                    break

    def terminated(self, pod: str, container: str) -> Any:
        for p in reversed(self.seen.get(pod, [])):
            for cs in p.status.container_statuses or []:
                if cs.name == container and cs.state and cs.state.terminated:
                    return cs.state.terminated
        return None

    def __enter__(self) -> PodWatch:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self.join(timeout=10)


def only_trial(kube: Cluster, xp: str, timeout: float = 120) -> dict[str, Any]:
    return kube.until(lambda: (kube.trials(xp) or [None])[0], timeout, what=f"a Trial of {xp}")


def running_pod(kube: Cluster, xp: str, timeout: float = 180) -> Any:
    def find() -> Any:
        for p in kube.pods(xp):
            for cs in p.status.container_statuses or []:
                if cs.name == "trainer" and cs.state and cs.state.running:
                    return p
        return None

    return kube.until(find, timeout, what=f"a running trainer of {xp}")


# -- the node itself -----------------------------------------------------------------


def test_node_is_real_and_isolated(cluster: KubeCluster, real_node: tfnode.RealNode) -> None:
    node = json.loads(cluster.kubectl("get", "node", tfnode.NODE_NAME, "-o", "json").stdout)
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.3"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert {"key": tfnode.TAINT_KEY, "value": "true", "effect": "NoSchedule"} in node["spec"][
        "taints"
    ]
    addrs = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addrs["InternalIP"] == tfnode.GATEWAY


def fence_drops() -> int:
    """Packets the node's FORWARD fence has dropped so far (and that it is in place)."""
    import subprocess

    rules = subprocess.run(
        ["iptables", "-w", "-t", "mangle", "-S", "FORWARD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert rules[1:2] == [f"-A FORWARD -j {tfnode.FILTER_CHAIN}"], rules[:3]
    out = subprocess.run(
        ["iptables", "-w", "-t", "mangle", "-L", tfnode.FILTER_CHAIN, "-v", "-x", "-n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    drops = [ln.split() for ln in out[2:] if "DROP" in ln]
    assert len(drops) == 2, out
    return sum(int(d[0]) for d in drops)


def test_pod_dns_service_and_no_way_out(
    cluster: KubeCluster, real_node: tfnode.RealNode, namespace: str
) -> None:
    """A pod resolves a Service by name through CoreDNS, reaches the API server
    through the `kubernetes` Service (kube-proxy), and what it sends past the machine
    is dropped by the node's fence (checked to be in place first) before any
    interface but the bridge sees it; a name outside the cluster does not resolve."""
    before = fence_drops()
    script = (
        "nslookup kubernetes.default.svc.cluster.local; echo dns=$?; "
        f"nc -w 3 {tfnode.SERVICE_IP} 443 </dev/null && echo svc=0 || echo svc=1; "
        "nc -w 2 203.0.113.1 80 </dev/null && echo out=0 || echo out=1; "
        "nslookup example.com > /dev/null 2>&1 && echo ext=0 || echo ext=1"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe"},
        "spec": on_real_node(
            {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "probe",
                        "image": BUSYBOX,
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", script],
                    }
                ],
            }
        ),
    }
    cluster.kubectl("-n", namespace, "create", "-f", "-", input=json.dumps(pod))
    wait_for(
        lambda: (
            cluster.kubectl(
                "-n", namespace, "get", "pod", "probe", "-o", "jsonpath={.status.phase}"
            ).stdout
            in ("Succeeded", "Failed")
        ),
        timeout=120,
        what="the probe pod to finish",
    )
    out = cluster.kubectl("-n", namespace, "logs", "probe").stdout
    assert "dns=0" in out and tfnode.SERVICE_IP in out, out
    assert "svc=0" in out, out
    assert "out=1" in out, out
    assert "ext=1" in out, out
    assert fence_drops() > before, "the fence did not see the pod's packet"


# -- a real trainer, end to end ---------------------------------------------------------

DIGITS = [
    "python",
    "trainers/digits.py",
    "--lr=${params.lr}",
    "--hidden=32",
    "--epochs=4",
]


def test_digits_trainer_runs_as_a_real_trial(kube: Cluster) -> None:
    xp = real_experiment(
        "digits",
        DIGITS,
        metric="val_accuracy",
        direction="maximize",
        parameters=[{"name": "lr", "type": "float", "min": 0.01, "max": 0.1, "log": True}],
    )
    kube.create(xp)
    with PodWatch(kube) as watch:
        status = kube.until(lambda: kube.finished("digits"), 300, what="digits to finish")
        kube.check(status["phase"] == "Succeeded", f"digits ended {status['phase']}")
        trial = kube.trials("digits")[0]
        pod = kube.pods("digits")[0]
        log = pod_log(kube, pod.metadata.name)
        values = [
            json.loads(ln)["val_accuracy"]
            for ln in log.splitlines()
            if ln.startswith("{") and "val_accuracy" in ln
        ]
        kube.check(len(values) == 4, f"the trainer printed {len(values)} epochs:\n{log}")
        ts = trial["status"]
        kube.check(
            ts["objective"] == pytest.approx(values[-1]),
            f"objective {ts.get('objective')} is not the log's last {values[-1]}",
        )
        kube.check(ts.get("phase") == "Succeeded", f"trial status: {ts}")
        assert pod.status.phase == "Succeeded"
        assert pod.spec.node_name == tfnode.NODE_NAME
        sidecars = [
            c for c in pod.status.init_container_statuses or [] if c.name != "trialforge-entrypoint"
        ]
        assert sidecars and all(c.state.terminated for c in sidecars), sidecars
        assert all(c.state.terminated.exit_code == 0 for c in sidecars), sidecars
        trainer = watch.terminated(pod.metadata.name, "trainer")
        assert trainer is not None and trainer.exit_code == 0
        image_id = next(c.image_id for c in pod.status.container_statuses if c.name == "trainer")
        assert "sha256:" in image_id, image_id


# -- signals -----------------------------------------------------------------------------

TRAP = [
    "python",
    "-c",
    "import json, signal, sys, time\n"
    "def bye(*_):\n"
    "    print('got SIGTERM', flush=True)\n"
    "    sys.exit(42)\n"
    "signal.signal(signal.SIGTERM, bye)\n"
    "for step in range(1000):\n"
    "    print(json.dumps({'step': step, 'loss': 1.0 / (step + 1)}), flush=True)\n"
    "    time.sleep(0.5)\n",
]


def test_deleted_pod_gives_the_trainer_sigterm(kube: Cluster) -> None:
    """Grace 120 s: a trainer that only saw SIGKILL would end 137 after two minutes;
    one that got SIGTERM ends with its own code 42."""
    kube.create(real_experiment("sigterm", TRAP, grace=120))
    with PodWatch(kube) as watch:
        pod = running_pod(kube, "sigterm")
        time.sleep(2)  # the trainer has installed its handler
        kube.core.delete_namespaced_pod(pod.metadata.name, kube.ns)
        term = kube.until(
            lambda: watch.terminated(pod.metadata.name, "trainer"),
            60,
            what="the trainer's terminated state",
        )
        kube.check(term.exit_code == 42, f"trainer ended {term.exit_code} ({term.reason})")


PRUNE_ME = [
    "python",
    "-c",
    "import json, os, signal, sys, time\n"
    "def bye(*_):\n"
    "    print('got SIGTERM', flush=True)\n"
    "    sys.exit(42)\n"
    "signal.signal(signal.SIGTERM, bye)\n"
    "x = float(sys.argv[1])\n"
    "for step in range(1, 30 if x < 0.5 else 400):\n"  # the good one ends first
    "    print(json.dumps({'step': step, 'loss': x + 1.0 / step}), flush=True)\n"
    "    time.sleep(0.1 if x < 0.5 else 0.5)\n",
    "${params.x}",
]


def test_pruned_trial_trainer_gets_sigterm(kube: Cluster) -> None:
    """Two trials side by side, one clearly worse: once the good one has finished, the
    median rule prunes the other while its trainer runs, and that trainer ends through
    its SIGTERM handler (code 42), not a kill."""
    xp = real_experiment(
        "prune",
        PRUNE_ME,
        parameters=[{"name": "x", "type": "categorical", "values": [0.0, 5.0]}],
        max_trials=2,
        parallelism=2,
        early_stopping={
            "algorithm": "median",
            "settings": {"nStartupTrials": 1, "nWarmupSteps": 5},
        },
        extra_spec={"search": {"algorithm": "grid"}},
        grace=120,
    )
    kube.create(xp)
    with PodWatch(kube) as watch:

        def pruned() -> dict[str, Any] | None:
            for t in kube.trials("prune"):
                if (t.get("status") or {}).get("phase") == "Pruned":
                    return t
            return None

        trial = kube.until(pruned, 300, what="a pruned trial")
        kube.check(trial["spec"]["parameters"]["x"] == 5.0, f"pruned the wrong trial: {trial}")
        job = trial["metadata"]["name"]

        def trainer_end() -> Any:
            for name in list(watch.seen):
                if name.startswith(job):
                    term = watch.terminated(name, "trainer")
                    if term is not None:
                        return term
            return None

        term = kube.until(trainer_end, 90, what="the pruned trainer's terminated state")
        kube.check(term.exit_code == 42, f"the pruned trainer ended {term.exit_code}")


# -- every metrics source in a real pod -----------------------------------------------------

FILE_WRITER = [
    "python",
    "-c",
    "import json, os, time\n"
    "path = os.environ['TRIALFORGE_METRICS_PATH']\n"
    "f = open(path, 'a')\n"
    "for step in range(1, 13):\n"
    "    if step == 7:\n"  # logrotate's `create`: the old file moves aside, a new one starts
    "        f.close(); os.rename(path, path + '.1'); f = open(path, 'a')\n"
    "    f.write(json.dumps({'step': step, 'loss': 1.0 / step}) + '\\n'); f.flush()\n"
    "    time.sleep(0.2)\n"
    "print('done', flush=True)\n",
]

PUSHER = [
    "python",
    "-c",
    "import time, trialforge\n"
    "for step in range(1, 9):\n"
    "    trialforge.report(step=step, loss=1.0 / step)\n"
    "    time.sleep(0.1)\n",
]

TB_WRITER = [
    "python",
    "-c",
    "import os, time\n"
    "from tensorboard.compat.proto import event_pb2, summary_pb2\n"
    "from tensorboard.summary.writer.event_file_writer import EventFileWriter\n"
    "w = EventFileWriter(os.environ['TRIALFORGE_METRICS_PATH'])\n"
    "for step in range(1, 9):\n"
    "    v = summary_pb2.Summary.Value(tag='loss', simple_value=1.0 / step)\n"
    "    w.add_event(event_pb2.Event(wall_time=time.time(), step=step,\n"
    "        summary=summary_pb2.Summary(value=[v])))\n"
    "    w.flush(); time.sleep(0.1)\n"
    "w.close()\n",
]


@pytest.mark.parametrize(
    ("source", "command", "image", "steps"),
    [
        ("file", FILE_WRITER, TRAINER_IMAGE, 12),
        ("push", PUSHER, TRAINER_IMAGE, 8),
        ("tensorboard", TB_WRITER, OPERATOR_IMAGE, 8),  # the operator image has tensorboard
    ],
)
def test_metrics_source_in_a_real_pod(
    kube: Cluster, source: str, command: list[str], image: str, steps: int
) -> None:
    metrics: dict[str, Any] = {"source": source, "format": "json"}
    if source == "file":
        metrics["path"] = "metrics.jsonl"
    if source == "tensorboard":
        metrics["path"] = "tb"
    name = f"src-{source}"
    kube.create(real_experiment(name, command, image=image, metrics=metrics))
    status = kube.until(lambda: kube.finished(name), 240, what=f"{name} to finish")
    kube.check(status["phase"] == "Succeeded", f"{name} ended {status['phase']}")
    ts = kube.trials(name)[0]["status"]
    got = [p["step"] for p in (ts.get("history") or {}).get("loss", [])]
    kube.check(got == list(range(1, steps + 1)), f"{source}: stored steps {got}")
    kube.check(ts["objective"] == pytest.approx(1.0 / steps), f"{source}: {ts}")


# -- what only a kubelet decides ------------------------------------------------------------


def test_trainer_over_its_memory_limit_is_oomkilled(kube: Cluster) -> None:
    hog = ["python", "-c", "x = []\nwhile True:\n    x.append(bytearray(16 << 20))\n"]
    kube.create(
        real_experiment(
            "oom",
            hog,
            container={"resources": {"limits": {"memory": "96Mi"}}},
        )
    )
    status = kube.until(lambda: kube.finished("oom"), 180, what="oom to finish")
    trial = kube.trials("oom")[0]["status"]
    text = json.dumps(trial)
    kube.check(trial["phase"] == "Failed", f"the trial ended {trial['phase']}")
    kube.check("OOMKilled" in text, f"the Trial does not say OOMKilled: {trial}")
    assert status["phase"] in ("Succeeded", "Failed")


def test_missing_image_fails_the_trial_with_the_reason(kube: Cluster) -> None:
    kube.create(
        real_experiment(
            "noimage",
            ["python", "-c", "print(1)"],
            image="trialforge.local/not-built:1",
            trial={"timeout": "90s"},
        )
    )
    status = kube.until(lambda: kube.finished("noimage"), 200, what="noimage to finish")
    trial = kube.trials("noimage")[0]["status"]
    kube.check(trial["phase"] == "Failed", f"the trial ended {trial['phase']}: {status}")
    kube.check(
        "ErrImageNeverPull" in json.dumps(trial) or "ImagePull" in json.dumps(trial),
        f"the Trial does not name the image error: {trial}",
    )


def test_crashing_trainer_exit_code_and_last_lines(kube: Cluster) -> None:
    crash = [
        "python",
        "-c",
        "import sys\n"
        "for i in range(30):\n"
        "    print(f'line {i}', flush=True)\n"
        "print('Traceback: the data loader broke', flush=True)\n"
        "sys.exit(3)\n",
    ]
    kube.create(real_experiment("crash", crash))
    kube.until(lambda: kube.finished("crash"), 180, what="crash to finish")
    trial = kube.trials("crash")[0]["status"]
    kube.check(trial["phase"] == "Failed", f"the trial ended {trial['phase']}")
    kube.check(trial.get("exitCode") == 3, f"exit code {trial.get('exitCode')}: {trial}")
    kube.check(
        "the data loader broke" in json.dumps(trial), f"the last lines are not kept: {trial}"
    )


# -- multi-node ---------------------------------------------------------------------------

ALL_REDUCE = [
    "python",
    "-c",
    "import json, os\n"
    "import torch, torch.distributed as dist\n"
    "dist.init_process_group('gloo', init_method='env://', timeout=__import__('datetime')"
    ".timedelta(seconds=120))\n"
    "rank, world = dist.get_rank(), dist.get_world_size()\n"
    "t = torch.tensor([float(rank + 1)])\n"
    "dist.all_reduce(t)\n"
    "if rank == 0:\n"
    "    print(json.dumps({'step': 1, 'sum': t.item(), 'world': world}), flush=True)\n"
    "dist.destroy_process_group()\n",
]


def test_two_workers_rendezvous_through_the_headless_service(kube: Cluster) -> None:
    xp = real_experiment(
        "ddp",
        ALL_REDUCE,
        metric="sum",
        direction="maximize",
        trial={"workers": 2, "timeout": "4m"},
    )
    kube.create(xp)
    status = kube.until(lambda: kube.finished("ddp"), 300, what="ddp to finish")
    kube.check(status["phase"] == "Succeeded", f"ddp ended {status['phase']}")
    trial = kube.trials("ddp")[0]["status"]
    kube.check(trial["objective"] == pytest.approx(3.0), f"all-reduce gave {trial}")
    pods = kube.pods("ddp")
    assert len(pods) == 2 and all(p.status.phase == "Succeeded" for p in pods), [
        (p.metadata.name, p.status.phase) for p in pods
    ]


# -- the chart's operator as real pods --------------------------------------------------


def test_chart_operator_runs_real_trials_through_the_ingest_service(
    cluster: KubeCluster, real_node: tfnode.RealNode, namespace: str
) -> None:
    """`helm install` puts the operator image on real-0 as real pods (restricted Pod
    Security); an Experiment in a watched namespace runs real trainer pods whose
    collectors report to the in-cluster ingest Service; `helm test` passes."""
    from test_chart import CHART, RESTRICTED, helm, sets

    cluster.kubectl("label", "namespace", namespace, *[f"{k}={v}" for k, v in RESTRICTED.items()])
    watched = f"{namespace[:40]}-xp"
    cluster.kubectl("create", "namespace", watched)
    release = "tfreal"
    values = {
        "image": {"repository": "trialforge/operator", "tag": "dev", "pullPolicy": "Never"},
        "replicaCount": 1,
        "watch": {"allNamespaces": False, "namespaces": [watched]},
        "nodeSelector": {"kubernetes.io/hostname": tfnode.NODE_NAME},
        "tolerations": [tfnode.TOLERATION],
        "operator": {"logFormat": "text"},
    }
    try:
        helm(
            cluster,
            "install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--wait",
            "--timeout",
            "180s",
            *sets(values),
        )
        wait_for(
            lambda: (
                cluster.kubectl(
                    "-n", watched, "get", "serviceaccount", "default", check=False
                ).returncode
                == 0
            ),
            timeout=30,
            what="the watched namespace's ServiceAccount",
        )
        kube = Cluster(cluster, watched, None)
        kube.create(
            real_experiment(
                "viachart",
                [
                    "python",
                    "-c",
                    "import json, sys\n"
                    "for s in range(1, 6):\n"
                    "    print(json.dumps({'step': s, 'loss': float(sys.argv[1]) / s}))\n",
                    "${params.x}",
                ],
                max_trials=2,
                parallelism=2,
            )
        )
        status = kube.until(lambda: kube.finished("viachart"), 300, what="viachart to finish")
        logs = cluster.kubectl(
            "-n",
            namespace,
            "logs",
            "-l",
            f"app.kubernetes.io/instance={release}",
            "--tail=40",
            check=False,
        ).stdout
        kube.check(status["phase"] == "Succeeded", f"viachart ended {status['phase']}:\n{logs}")
        for t in kube.trials("viachart"):
            steps = [p["step"] for p in (t["status"].get("history") or {}).get("loss", [])]
            kube.check(steps == [1, 2, 3, 4, 5], f"{t['metadata']['name']}: steps {steps}")
        helm(cluster, "test", release, "--namespace", namespace, "--timeout", "120s")
    finally:
        helm(
            cluster,
            "uninstall",
            release,
            "--namespace",
            namespace,
            "--wait",
            "--timeout",
            "60s",
            check=False,
        )
        cluster.kubectl("delete", "namespace", watched, "--wait=false", check=False)


# -- trialforge logs against real pods ----------------------------------------------------


def test_logs_follow_a_running_trial_then_read_the_kept_tail(kube: Cluster) -> None:
    """`trialforge logs -f` streams a real pod's output until the trial ends; once the
    Job (and its pod) is gone, `trialforge logs` prints the lines the operator kept."""
    import subprocess
    import sys

    talk = [
        "python",
        "-c",
        "import json, time\n"
        "for s in range(1, 13):\n"
        "    print(json.dumps({'step': s, 'loss': 1.0 / s, 'say': f'line-{s}'}), flush=True)\n"
        "    time.sleep(0.5)\n",
    ]
    kube.create(real_experiment("talk", talk))
    running_pod(kube, "talk")
    cmd = [
        sys.executable, "-m", "trialforge.cli", "logs", "talk-0", "-f",
        "-n", kube.ns, "--kubeconfig", str(kube.c.kubeconfig),
    ]  # fmt: skip
    follow = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    kube.check(follow.returncode == 0, f"logs -f: {follow.returncode}\n{follow.stderr}")
    for s in range(1, 13):
        kube.check(f"line-{s}" in follow.stdout, f"logs -f missed line-{s}:\n{follow.stdout}")
    kube.until(lambda: kube.finished("talk"), 120, what="talk to finish")
    kube.c.kubectl("-n", kube.ns, "delete", "job", "talk-0", "--wait=true", check=False)
    kube.until(lambda: not kube.pods("talk"), 60, what="talk's pod to be gone")
    kept = subprocess.run(cmd[:5] + cmd[6:], capture_output=True, text=True, timeout=60)
    kube.check(kept.returncode == 0, f"logs: {kept.returncode}\n{kept.stderr}")
    kube.check("line-12" in kept.stdout, f"the kept tail lacks the last line:\n{kept.stdout}")
