"""Helpers for tests against a real Kubernetes control plane (see conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
E2E = REPO / "e2e"
CLUSTER_CLI = E2E / "cluster"
CRDS = REPO / "crds"
DEFAULT_NODES = int(os.environ.get("TRIALFORGE_TEST_GPU_NODES", "4"))
DEFAULT_GPUS = int(os.environ.get("TRIALFORGE_TEST_GPUS_PER_NODE", "8"))

sys.path.insert(0, str(E2E))
import tfcluster  # noqa: E402


def external_kubeconfig() -> str | None:
    """The kubeconfig of an existing cluster to test against, if one is given."""
    return os.environ.get("TRIALFORGE_TEST_KUBECONFIG") or os.environ.get("KUBECONFIG_EXTERNAL")


@dataclass
class KubeCluster:
    """A running cluster the tests talk to."""

    kubeconfig: Path
    bin_dir: Path | None
    external: bool
    state_dir: Path | None = None
    name: str = ""
    _api_client: Any = field(default=None, repr=False)

    @property
    def api_client(self) -> Any:
        """A kubernetes.client.ApiClient for this cluster."""
        if self._api_client is None:
            from kubernetes import config

            self._api_client = config.new_client_from_config(config_file=str(self.kubeconfig))
        return self._api_client

    @property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    @property
    def batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self.api_client)

    def kubectl_path(self) -> str:
        if self.bin_dir and (self.bin_dir / "kubectl").exists():
            return str(self.bin_dir / "kubectl")
        return "kubectl"

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raises AssertionError with stderr on failure."""
        cmd = [self.kubectl_path(), "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc

    def apply(self, obj: dict[str, Any] | list[dict[str, Any]]) -> None:
        items = obj if isinstance(obj, list) else [obj]
        doc = {"apiVersion": "v1", "kind": "List", "items": items}
        self.kubectl("apply", "-f", "-", input=json.dumps(doc))

    def create_gpu_nodes(
        self,
        n: int,
        gpus: int = DEFAULT_GPUS,
        prefix: str = "kwok-gpu-",
        start: int = 0,
        product: str = "NVIDIA-H100-80GB-HBM3",
        cpu: str = "96",
        memory: str = "1Ti",
    ) -> list[str]:
        """Create (or update) n kwok GPU nodes and wait until they are Ready."""
        names = [f"{prefix}{i}" for i in range(start, start + n)]
        self.apply(
            [
                tfcluster.gpu_node_manifest(
                    name, gpus=gpus, product=product, cpu=cpu, memory=memory
                )
                for name in names
            ]
        )
        proc = self.kubectl(
            "wait",
            "--for=condition=Ready",
            "--timeout=60s",
            *[f"node/{name}" for name in names],
            check=False,
            timeout=90,
        )
        if proc.returncode != 0:
            hint = (
                ""
                if not self.external
                else " (an external cluster needs the kwok controller: see e2e/kind/up.sh)"
            )
            raise AssertionError(f"kwok nodes did not become Ready{hint}:\n{proc.stderr}")
        return names


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 60,
    interval: float = 0.25,
    what: str = "condition",
    diagnostics: Callable[[], str] | None = None,
) -> Any:
    """Poll predicate until it returns something truthy; return it or fail.

    ``diagnostics`` adds what the failure message should show (the cluster's state).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    extra = f"\n{diagnostics()}" if diagnostics is not None else ""
    pytest.fail(
        f"timed out after {timeout}s waiting for {what} (last: {last!r}){extra}", pytrace=False
    )
