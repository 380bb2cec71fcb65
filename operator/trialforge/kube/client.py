"""A thin layer over the official client: plain dicts in, plain dicts out.

Lists come back as parsed JSON (``_preload_content=False``) rather than model
objects: at a thousand trials the model conversion costs more than the call.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from trialforge.api.experiment import GROUP, VERSION
from trialforge.kube import kueue, names
from trialforge.metrics.exporter import API_WRITES, status_patched


class Kube:
    def __init__(
        self, api_client: client.ApiClient, component: str = "trialforge-operator"
    ) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.component = component
        self.writes = 0  # API write requests made (for the benchmark and tests)

    def _wrote(self, resource: str, verb: str) -> None:
        self.writes += 1
        API_WRITES.labels(resource, verb).inc()

    @staticmethod
    def _json(resp: Any) -> dict[str, Any]:
        return json.loads(resp.data)

    # -- custom resources -----------------------------------------------------------

    def _get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One custom object, or None when it does not exist."""
        try:
            return self._json(
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, name, _preload_content=False
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def get_experiment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(names.EXPERIMENTS, namespace, name)

    def list_experiments(
        self, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Experiments in ``namespace`` (None: all), selected by the API server."""
        selected = {"label_selector": label_selector} if label_selector else {}
        if namespace:
            resp = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, names.EXPERIMENTS, _preload_content=False, **selected
            )
        else:
            resp = self.custom.list_cluster_custom_object(
                GROUP, VERSION, names.EXPERIMENTS, _preload_content=False, **selected
            )
        return self._json(resp)["items"]

    def list_trial_pods(self, namespace: str, trial: str) -> list[dict[str, Any]]:
        """The pods of one trial (every worker), by the trial label."""
        resp = self.core.list_namespaced_pod(
            namespace, label_selector=f"{names.LABEL_TRIAL}={trial}", _preload_content=False
        )
        return self._json(resp)["items"]

    def pod_log(
        self,
        namespace: str,
        pod: str,
        container: str | None = None,
        tail_lines: int | None = None,
        limit_bytes: int | None = None,
        follow: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """A container's log: the whole text, or (``follow``) the urllib3 response
        to read lines from while it runs."""
        extra: dict[str, Any] = {}
        if container:
            extra["container"] = container
        if tail_lines is not None:
            extra["tail_lines"] = tail_lines
        if limit_bytes is not None:
            extra["limit_bytes"] = limit_bytes
        if timeout is not None:
            extra["_request_timeout"] = timeout
        resp = self.core.read_namespaced_pod_log(
            pod, namespace, follow=follow, _preload_content=False, **extra
        )
        if follow:
            return resp
        return resp.data.decode("utf-8", errors="replace")

    def list_trials(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        resp = self.custom.list_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            names.TRIALS,
            label_selector=f"{names.LABEL_EXPERIMENT}={experiment}",
            _preload_content=False,
        )
        return self._json(resp)["items"]

    def get_trial(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(names.TRIALS, namespace, name)

    def create_trial(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create, or None when it exists already (a deterministic name decided twice)."""
        self._wrote("trials", "create")
        try:
            return self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, names.TRIALS, dict(body)
            )
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    def patch_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version is not None:
            # A merge patch with a resourceVersion is conditional: 409 if it moved.
            body["metadata"] = {"resourceVersion": resource_version}
        self._wrote(f"{plural}/status", "patch")
        status_patched(plural)
        return self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural, name, body
        )

    # -- workloads --------------------------------------------------------------------

    def list_jobs(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        resp = self.batch.list_namespaced_job(
            namespace,
            label_selector=f"{names.LABEL_EXPERIMENT}={experiment}",
            _preload_content=False,
        )
        return self._json(resp)["items"]

    def list_pods(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        resp = self.core.list_namespaced_pod(
            namespace,
            label_selector=f"{names.LABEL_EXPERIMENT}={experiment}",
            _preload_content=False,
        )
        return self._json(resp)["items"]

    def list_workloads(self, namespace: str) -> list[dict[str, Any]]:
        """Kueue's Workloads of Jobs in ``namespace``; none when Kueue is not installed."""
        try:
            resp = self.custom.list_namespaced_custom_object(
                kueue.GROUP,
                kueue.VERSION,
                namespace,
                kueue.WORKLOADS,
                label_selector=kueue.JOB_UID_LABEL,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status == 404:  # no Kueue CRDs: nothing admits the Jobs
                return []
            raise
        return self._json(resp)["items"]

    def patch_workload(self, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        self._wrote("workloads", "patch")
        try:
            self.custom.patch_namespaced_custom_object(
                kueue.GROUP, kueue.VERSION, namespace, kueue.WORKLOADS, name, dict(body)
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def create(self, obj: Mapping[str, Any]) -> bool:
        """Create a Job, Service or Secret; False when it already exists."""
        namespace = obj["metadata"]["namespace"]
        kind = obj["kind"]
        self._wrote(f"{kind.lower()}s", "create")
        try:
            if kind == "Job":
                self.batch.create_namespaced_job(namespace, dict(obj))
            elif kind == "Service":
                self.core.create_namespaced_service(namespace, dict(obj))
            elif kind == "Secret":
                self.core.create_namespaced_secret(namespace, dict(obj))
            else:
                raise ValueError(f"cannot create {kind}")
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def node_labels(self, name: str) -> dict[str, str] | None:
        """A node's labels; None when it is gone or we may not read nodes (chart: rbac.nodes)."""
        try:
            node = self._json(self.core.read_node(name, _preload_content=False))
        except ApiException as exc:
            if exc.status in (403, 404):
                return None
            raise
        return dict((node.get("metadata") or {}).get("labels") or {})

    def node(self, name: str) -> dict[str, Any] | None:
        """A node; None when it is gone.  PermissionError when we may not read nodes."""
        try:
            return self._json(self.core.read_node(name, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 403:
                raise PermissionError(f"may not read node {name}") from None
            raise

    def patch_job(self, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        self._wrote("jobs", "patch")
        try:
            self.batch.patch_namespaced_job(name, namespace, dict(body))
        except ApiException as exc:
            if exc.status != 404:
                raise

    def delete_job(self, namespace: str, name: str) -> None:
        self._wrote("jobs", "delete")
        try:
            self.batch.delete_namespaced_job(
                name, namespace, propagation_policy="Background", grace_period_seconds=5
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def event(self, obj: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        """A Kubernetes Event on ``obj``; never fails the caller (events are best effort)."""
        meta = obj["metadata"]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self.component},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        self._wrote("events", "create")
        with contextlib.suppress(ApiException):
            self.core.create_namespaced_event(meta["namespace"], body)
