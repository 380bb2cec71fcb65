"""Fixtures for tests against a real Kubernetes control plane.

By default the session starts its own cluster with `e2e/cluster up` (etcd,
kube-apiserver, kube-controller-manager, kube-scheduler and kwok, built from Go
modules; see e2e/README.md) and stops it at the end, even when tests fail; a
watchdog stops it too if this pytest process is killed. Set
TRIALFORGE_TEST_KUBECONFIG (or KUBECONFIG_EXTERNAL) to run the same tests
against an existing cluster instead (e.g. one made by e2e/kind/up.sh).

When the toolchain or a build is missing, the cluster tests FAIL with the
reason: they are never skipped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterlib import (
    CLUSTER_CLI,
    CRDS,
    DEFAULT_GPUS,
    DEFAULT_NODES,
    E2E,
    KubeCluster,
    external_kubeconfig,
    tfcluster,
    wait_for,
)
from operatorlib import Cluster, OperatorProcess, started

_build_error: str | None = None
_real_node = False  # a selected test needs real-0: the session's cluster gets it


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects anything
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/cluster carries the `cluster` marker."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.cluster)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build missing binaries before any test runs, outside the per-test timeout.

    A first build from scratch takes many minutes; doing it here keeps it out of
    pytest-timeout's budget for the first cluster test. A failure is remembered
    and reported by the fixtures (the tests fail, they are not skipped).
    """
    global _build_error, _real_node
    if external_kubeconfig() or session.config.option.collectonly:
        return
    if not any(item.get_closest_marker("cluster") for item in session.items):
        return
    _real_node = any(item.get_closest_marker("realnode") for item in session.items)
    try:
        if not all(tfcluster.tool_is_built(t) for t in tfcluster.TOOLSET):
            tr = session.config.pluginmanager.get_plugin("terminalreporter")
            if tr is not None:
                tr.write_line(
                    "building the control-plane binaries (e2e/build); "
                    "the first build takes 15-25 min on 2 cores ..."
                )
        tfcluster.build()
        if _real_node:
            import tfimages

            tfcluster.install_deps()
            tfimages.image_tars()  # trialforge/operator:dev, trialforge/trainer:dev
    except Exception as e:
        _build_error = f"{type(e).__name__}: {e}"


def install_crds(c: KubeCluster) -> list[str]:
    files = sorted(p for p in CRDS.glob("*.y*ml") if p.is_file()) if CRDS.is_dir() else []
    if not files:
        return []
    args = ["apply", "--server-side", "--force-conflicts", "-o", "name"]
    for f in files:
        args += ["-f", str(f)]
    out = c.kubectl(*args).stdout.split()
    crds = [n for n in out if n.startswith("customresourcedefinition")]
    if crds:
        c.kubectl("wait", "--for=condition=Established", "--timeout=60s", *crds)
    return crds


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[KubeCluster]:
    """The session's cluster: CRDs from crds/ installed, GPU kwok nodes created."""
    ext = external_kubeconfig()
    if ext:
        c = KubeCluster(kubeconfig=Path(ext).expanduser().resolve(), bin_dir=None, external=True)
        if _build_error is None and all(tfcluster.tool_is_built(t) for t in tfcluster.TOOLSET):
            c.bin_dir = tfcluster.bin_dir()
        _prepare(c)
        yield c
        return

    if _build_error:
        pytest.fail(f"cannot build the control plane: {_build_error}", pytrace=False)
    name = f"pytest-{os.getpid()}"
    state_dir = E2E / ".state" / name
    c = KubeCluster(
        kubeconfig=state_dir / "kubeconfig",
        bin_dir=None,
        external=False,
        state_dir=state_dir,
        name=name,
    )
    # Teardown is registered before `up` so a half-started cluster is stopped too.
    request.addfinalizer(lambda: _down(c))
    proc = subprocess.run(
        [
            sys.executable,
            str(CLUSTER_CLI),
            "--name",
            name,
            "--dir",
            str(state_dir),
            "up",
            "--owner-pid",
            str(os.getpid()),
            *(["--real-node"] if _real_node else []),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"e2e/cluster up failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}", pytrace=False
        )
    c.bin_dir = tfcluster.bin_dir()
    _prepare(c)
    yield c


def _prepare(c: KubeCluster) -> None:
    try:
        c.kubectl("get", "--raw", "/readyz", timeout=30)
    except AssertionError as e:
        pytest.fail(f"cluster at {c.kubeconfig} is not reachable: {e}", pytrace=False)
    install_crds(c)
    c.create_gpu_nodes(DEFAULT_NODES, gpus=DEFAULT_GPUS)


def _down(c: KubeCluster) -> None:
    if c._api_client is not None:
        c._api_client.close()
    proc = subprocess.run(
        [sys.executable, str(CLUSTER_CLI), "--name", c.name, "--dir", str(c.state_dir), "down"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"e2e/cluster down failed: {proc.stderr}")


@pytest.fixture
def namespace(cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test (with its default ServiceAccount), deleted after."""
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:6]}"
    c = cluster
    c.kubectl("create", "namespace", name)
    # the ServiceAccount admission plugin rejects pods until this exists
    wait_for(
        lambda: (
            c.kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode == 0
        ),
        timeout=30,
        what=f"default ServiceAccount in {name}",
    )
    yield name
    c.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def operator(
    cluster: KubeCluster, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess]:
    """`trialforge operator` watching the test's namespace; always stopped.
    ``@pytest.mark.operator_args(...)`` adds command-line arguments."""
    marker = request.node.get_closest_marker("operator_args")
    op = OperatorProcess(
        cluster.kubeconfig,
        namespace,
        tmp_path / "operator.log",
        identity=f"op-a-{namespace}",
        extra_args=[str(a) for a in marker.args] if marker else [],
    )
    with started(op):
        yield op


@pytest.fixture
def kube(cluster: KubeCluster, namespace: str, operator: OperatorProcess) -> Cluster:
    """Reads of the test's namespace, with diagnostics for failure messages."""
    return Cluster(cluster, namespace, operator)
