"""The local control plane is real: scheduling, Jobs, kwok lifecycles, RBAC, clean stop."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from clusterlib import CLUSTER_CLI, E2E, KubeCluster, external_kubeconfig, wait_for
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.cluster

IMAGE = "registry.example/trainer:1.0"
SIDECAR_IMAGE = "registry.example/trialforge-collector:0.1"
DIGEST = re.compile(r"^docker-pullable://[^@]+@sha256:[0-9a-f]{64}$")


def pod_spec(*, gpus: int = 0, sidecar: bool = False, restart: str = "Never") -> dict[str, Any]:
    main: dict[str, Any] = {"name": "trainer", "image": IMAGE, "command": ["python", "train.py"]}
    if gpus:
        main["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    spec: dict[str, Any] = {
        "restartPolicy": restart,
        "nodeSelector": {"type": "kwok"},
        "containers": [main],
        "terminationGracePeriodSeconds": 1,
    }
    if sidecar:
        spec["initContainers"] = [
            {"name": "collector", "image": SIDECAR_IMAGE, "restartPolicy": "Always"}
        ]
    return spec


def pod(name: str, annotations: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": pod_spec(**kw),
    }


def job(
    name: str, annotations: dict[str, str] | None = None, backoff: int = 0, **kw: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff,
            "template": {"metadata": {"annotations": annotations or {}}, "spec": pod_spec(**kw)},
        },
    }


def create(c: KubeCluster, ns: str, obj: dict[str, Any]) -> None:
    c.kubectl("-n", ns, "create", "-f", "-", input=json.dumps(obj))


def get_pod(c: KubeCluster, ns: str, name: str) -> client.V1Pod:
    return c.core.read_namespaced_pod(name, ns)


def job_condition(c: KubeCluster, ns: str, name: str) -> str | None:
    j = c.batch.read_namespaced_job_status(name, ns)
    for cond in j.status.conditions or []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return cond.type
    return None


def job_pods(c: KubeCluster, ns: str, name: str) -> list[client.V1Pod]:
    return c.core.list_namespaced_pod(ns, label_selector=f"job-name={name}").items


# -- nodes -----------------------------------------------------------------


def test_gpu_nodes_report_capacity_and_labels(cluster: KubeCluster) -> None:
    nodes = cluster.core.list_node(label_selector="type=kwok").items
    gpu = [n for n in nodes if n.metadata.name.startswith("kwok-gpu-")]
    assert len(gpu) >= 4
    for n in gpu:
        assert n.status.allocatable["nvidia.com/gpu"] == "8"
        assert n.status.capacity["nvidia.com/gpu"] == "8"
        assert n.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
        assert n.metadata.labels["nvidia.com/gpu.count"] == "8"
        ready = {c.type: c.status for c in n.status.conditions}
        assert ready["Ready"] == "True"


def test_create_more_gpu_nodes(cluster: KubeCluster) -> None:
    names = cluster.create_gpu_nodes(2, gpus=2, prefix="kwok-small-", product="NVIDIA-L4")
    try:
        n = cluster.core.read_node(names[1])
        assert n.status.allocatable["nvidia.com/gpu"] == "2"
        assert n.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-L4"
    finally:
        cluster.kubectl("delete", "node", *names, "--wait=false")


# -- Jobs and pods through the scheduler and kwok --------------------------


def test_gpu_job_is_scheduled_and_completes(cluster: KubeCluster, namespace: str) -> None:
    create(
        cluster, namespace, job("gpu1", gpus=1, annotations={"trialforge.io/kwok-run-seconds": "1"})
    )
    cond = wait_for(
        lambda: job_condition(cluster, namespace, "gpu1"), timeout=60, what="Job gpu1 to finish"
    )
    assert cond == "Complete"
    (p,) = job_pods(cluster, namespace, "gpu1")
    assert p.spec.node_name and p.spec.node_name.startswith("kwok-gpu-")
    assert p.status.phase == "Succeeded"
    (cs,) = p.status.container_statuses
    assert cs.state.terminated.exit_code == 0
    assert cs.state.terminated.reason == "Completed"
    assert DIGEST.match(cs.image_id), cs.image_id
    assert cs.image_id.startswith("docker-pullable://registry.example/trainer@sha256:")
    sched = {c.type: c for c in p.status.conditions}["PodScheduled"]
    assert sched.status == "True"
    j = cluster.batch.read_namespaced_job_status("gpu1", namespace)
    assert j.status.succeeded == 1


def test_job_without_annotations_completes_by_default(cluster: KubeCluster, namespace: str) -> None:
    create(cluster, namespace, job("plain"))
    cond = wait_for(
        lambda: job_condition(cluster, namespace, "plain"), timeout=60, what="Job plain to finish"
    )
    assert cond == "Complete"


def test_exit_code_annotation_fails_pod(cluster: KubeCluster, namespace: str) -> None:
    create(
        cluster,
        namespace,
        pod(
            "exit3",
            annotations={
                "trialforge.io/kwok-exit-code": "3",
                "trialforge.io/kwok-run-seconds": "0.5",
            },
        ),
    )
    p = wait_for(
        lambda: (q := get_pod(cluster, namespace, "exit3")).status.phase == "Failed" and q,
        timeout=60,
        what="pod exit3 to fail",
    )
    (cs,) = p.status.container_statuses
    assert cs.state.terminated.exit_code == 3
    assert cs.state.terminated.reason == "Error"
    assert p.spec.node_name.startswith("kwok-")


def test_failing_job_with_backoff_limit_zero_fails(cluster: KubeCluster, namespace: str) -> None:
    create(
        cluster,
        namespace,
        job("bad", backoff=0, gpus=1, annotations={"trialforge.io/kwok-exit-code": "3"}),
    )
    cond = wait_for(
        lambda: job_condition(cluster, namespace, "bad"), timeout=60, what="Job bad to finish"
    )
    assert cond == "Failed"
    j = cluster.batch.read_namespaced_job_status("bad", namespace)
    failed = next(c for c in j.status.conditions if c.type == "Failed")
    assert failed.reason == "BackoffLimitExceeded"
    assert j.status.failed == 1
    (p,) = job_pods(cluster, namespace, "bad")
    assert p.status.container_statuses[0].state.terminated.exit_code == 3


def test_run_seconds_and_phases(cluster: KubeCluster, namespace: str) -> None:
    create(cluster, namespace, pod("slow", annotations={"trialforge.io/kwok-run-seconds": "3"}))
    running = wait_for(
        lambda: (q := get_pod(cluster, namespace, "slow")).status.phase == "Running" and q,
        timeout=30,
        what="pod slow to run",
    )
    assert running.status.container_statuses[0].state.running is not None
    done = wait_for(
        lambda: (q := get_pod(cluster, namespace, "slow")).status.phase == "Succeeded" and q,
        timeout=30,
        what="pod slow to succeed",
    )
    terminated = done.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0
    # It ran its 3 s, not ended at once: what kwok recorded (whole seconds), not how long
    # this test waited for it.
    assert (terminated.finished_at - terminated.started_at).total_seconds() >= 2


def test_pod_without_annotations_stays_running(cluster: KubeCluster, namespace: str) -> None:
    create(cluster, namespace, pod("idle"))
    # Created with it, a pod told to run 3 s: once kwok has ended that one, it has had
    # the time to end the idle one too, had it ended pods it was not told to end.
    create(cluster, namespace, pod("timed", annotations={"trialforge.io/kwok-run-seconds": "3"}))
    wait_for(
        lambda: get_pod(cluster, namespace, "idle").status.phase == "Running",
        timeout=30,
        what="pod idle to run",
    )
    wait_for(
        lambda: get_pod(cluster, namespace, "timed").status.phase == "Succeeded",
        timeout=30,
        what="pod timed to succeed",
    )
    assert get_pod(cluster, namespace, "idle").status.phase == "Running"
    # deleting it works like a kubelet: terminated, then gone
    cluster.core.delete_namespaced_pod("idle", namespace)

    def gone() -> bool:
        try:
            get_pod(cluster, namespace, "idle")
        except ApiException as e:
            return e.status == 404
        return False

    wait_for(gone, timeout=30, what="pod idle to be deleted")


def test_unschedulable_gpu_request_stays_pending(cluster: KubeCluster, namespace: str) -> None:
    create(cluster, namespace, pod("greedy", gpus=64))

    def unschedulable() -> Any:
        p = get_pod(cluster, namespace, "greedy")
        for cond in p.status.conditions or []:
            if cond.type == "PodScheduled" and cond.status == "False":
                return cond
        return None

    cond = wait_for(unschedulable, timeout=60, what="PodScheduled=False")
    assert cond.reason == "Unschedulable"
    assert "nvidia.com/gpu" in (cond.message or "")
    # The scheduler goes on: a pod that fits, created after, is bound, and this one is not.
    create(cluster, namespace, pod("fits"))
    wait_for(
        lambda: get_pod(cluster, namespace, "fits").spec.node_name,
        timeout=30,
        what="pod fits to be scheduled",
    )
    p = get_pod(cluster, namespace, "greedy")
    assert p.status.phase == "Pending"
    assert not p.spec.node_name


def test_native_sidecar_pod_runs_and_completes(cluster: KubeCluster, namespace: str) -> None:
    create(
        cluster,
        namespace,
        pod("side", sidecar=True, gpus=1, annotations={"trialforge.io/kwok-run-seconds": "2"}),
    )
    p = wait_for(
        lambda: (q := get_pod(cluster, namespace, "side")).status.phase == "Running" and q,
        timeout=30,
        what="pod side to run",
    )
    (ics,) = p.status.init_container_statuses
    assert ics.name == "collector" and ics.started and ics.state.running is not None
    assert DIGEST.match(ics.image_id), ics.image_id
    assert p.status.container_statuses[0].state.running is not None
    p = wait_for(
        lambda: (q := get_pod(cluster, namespace, "side")).status.phase == "Succeeded" and q,
        timeout=30,
        what="pod side to succeed",
    )
    (ics,) = p.status.init_container_statuses
    assert ics.state.terminated is not None and ics.state.terminated.exit_code == 0
    assert p.status.container_statuses[0].state.terminated.exit_code == 0


def test_native_sidecar_job_completes(cluster: KubeCluster, namespace: str) -> None:
    create(cluster, namespace, job("sidejob", sidecar=True, gpus=1))
    cond = wait_for(
        lambda: job_condition(cluster, namespace, "sidejob"),
        timeout=60,
        what="Job sidejob to finish",
    )
    assert cond == "Complete"


# -- security --------------------------------------------------------------


def test_rbac_denies_service_account_without_rights(cluster: KubeCluster, namespace: str) -> None:
    core = cluster.core
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    tok = core.create_namespaced_service_account_token(
        "nobody", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    cfg = client.Configuration()
    base = cluster.api_client.configuration
    cfg.host = base.host
    cfg.ssl_ca_cert = base.ssl_ca_cert
    cfg.verify_ssl = True
    cfg.api_key = {"authorization": f"Bearer {tok}"}
    with client.ApiClient(cfg) as sa_client:
        sa_core = client.CoreV1Api(sa_client)
        with pytest.raises(ApiException) as exc:
            sa_core.list_namespaced_pod(namespace)
        assert exc.value.status == 403
        assert f"system:serviceaccount:{namespace}:nobody" in exc.value.body

        # the same request via impersonation is denied too ...
        proc = cluster.kubectl(
            "-n",
            namespace,
            "get",
            "pods",
            f"--as=system:serviceaccount:{namespace}:nobody",
            check=False,
        )
        assert proc.returncode != 0 and "forbidden" in proc.stderr.lower()

        # ... and a Role + RoleBinding grant exactly that: RBAC decides, not a blanket deny
        cluster.kubectl(
            "-n", namespace, "create", "role", "pod-reader", "--verb=list", "--resource=pods"
        )
        cluster.kubectl(
            "-n",
            namespace,
            "create",
            "rolebinding",
            "nobody-reads",
            "--role=pod-reader",
            f"--serviceaccount={namespace}:nobody",
        )
        wait_for(lambda: _can_list(sa_core, namespace), timeout=30, what="RBAC grant")
        with pytest.raises(ApiException) as exc:
            sa_core.list_namespaced_secret(namespace)
        assert exc.value.status == 403


def _can_list(api: client.CoreV1Api, ns: str) -> bool:
    try:
        api.list_namespaced_pod(ns)
    except ApiException as e:
        if e.status == 403:
            return False
        raise
    return True


def test_admission_is_on(cluster: KubeCluster, namespace: str) -> None:
    """The ServiceAccount admission plugin mounts a token volume into pods."""
    create(cluster, namespace, pod("adm"))
    p = get_pod(cluster, namespace, "adm")
    assert p.spec.service_account_name == "default"
    assert any(v.name.startswith("kube-api-access-") for v in p.spec.volumes or [])


# -- the control plane's own lifecycle -------------------------------------

local_only = pytest.mark.skipif(
    bool(external_kubeconfig()),
    reason="checks the local control plane's processes; not applicable to an external cluster",
)


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLUSTER_CLI), *args], capture_output=True, text=True, timeout=timeout
    )


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _listen_sockets(port: int) -> set[str]:
    """The sockets listening on ``port``, as /proc/PID/fd links name them."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].split(":")[1], 16) == port:
                sockets.add(f"socket:[{parts[9]}]")
    return sockets


def _listening(port: int) -> bool:
    return bool(_listen_sockets(port))


def _cmdline(proc: Path) -> str:
    """A /proc/PID's command line, spaces for NULs (OSError when it is gone)."""
    return (proc / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ")


def _port_owners(port: int) -> list[tuple[int, str]]:
    """The processes holding a listening socket on ``port``: (pid, command line)."""
    sockets = _listen_sockets(port)
    owners = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in sockets for fd in (d / "fd").iterdir()):
                owners.append((int(d.name), _cmdline(d)[:300]))
        except OSError:
            continue  # gone, or not ours to read
    return owners


def _start_throwaway(tmp_path: Path, *extra: str) -> tuple[str, Path, dict[str, Any]]:
    name = f"throwaway-{uuid.uuid4().hex[:6]}"
    state = E2E / ".state" / name
    proc = _cli("--name", name, "--dir", str(state), "up", *extra)
    assert proc.returncode == 0, proc.stderr[-4000:]
    st = _cli("--name", name, "--dir", str(state), "status")
    assert st.returncode == 0, st.stdout + st.stderr
    status = json.loads(st.stdout)
    comps = status["components"]
    assert set(comps) >= {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok-controller",
    }
    assert all(c["alive"] for c in comps.values()), comps
    return name, state, status


@local_only
def test_cluster_down_leaves_nothing_behind(cluster: KubeCluster, tmp_path: Path) -> None:
    name, state, status = _start_throwaway(tmp_path)
    comps = status["components"]
    pids = [c["pid"] for c in comps.values()]
    ports = [p for c in comps.values() for p in c["ports"]]
    assert ports, "components should listen on loopback ports"
    env = _cli("--name", name, "--dir", str(state), "env").stdout
    assert f"KUBECONFIG={state}/kubeconfig" in env and "PATH=" in env

    down = _cli("--name", name, "--dir", str(state), "down")
    assert down.returncode == 0, down.stderr
    assert not [p for p in pids if _alive(p)], "processes left behind"
    # A freed port may be taken at once by an unrelated process (kwokctl and the
    # kernel both hand out ports near 32767): left behind means held by this cluster's.
    held = {p: _port_owners(p) for p in ports if _listening(p)}
    ours = {p: o for p, o in held.items() if any(str(state) in cmd for _, cmd in o)}
    assert not ours, f"ports still held by this cluster's processes: {ours}"
    assert not state.exists()
    # no process anywhere still refers to this cluster's state dir
    leftovers = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and _alive(int(d.name)):
            try:
                cmd = _cmdline(d)
            except OSError:
                continue
            if str(state) in cmd:
                leftovers.append((d.name, cmd[:200]))
    assert not leftovers
    # the session cluster is untouched
    cluster.kubectl("get", "--raw", "/readyz")


@local_only
def test_cluster_stops_when_owner_dies(cluster: KubeCluster, tmp_path: Path) -> None:
    owner = subprocess.Popen(["sleep", "600"])
    try:
        _name, state, status = _start_throwaway(tmp_path, "--owner-pid", str(owner.pid))
        pids = [c["pid"] for c in status["components"].values()]
    finally:
        owner.kill()
        owner.wait()
    wait_for(
        lambda: not any(_alive(p) for p in pids) and not state.exists(),
        timeout=60,
        what="the watchdog to stop the orphaned cluster",
    )


@local_only
def test_up_replaces_a_dead_cluster(cluster: KubeCluster, tmp_path: Path) -> None:
    """A crashed run leaves a state dir with dead pids: the next `up` starts cleanly."""
    name, state, status = _start_throwaway(tmp_path)
    try:
        for c in status["components"].values():
            os.kill(c["pid"], 9)
        proc = _cli("--name", name, "--dir", str(state), "up")
        assert proc.returncode == 0, proc.stderr[-4000:]
        st = json.loads(_cli("--name", name, "--dir", str(state), "status").stdout)
        assert st["running"]
    finally:
        _cli("--name", name, "--dir", str(state), "down")
    assert not state.exists()
