"""Lease-based leader election: of several operator processes, exactly one acts.

kopf's peering is active/standby by priority and freezes when priorities tie
(DESIGN §5), so Trialforge takes the Kubernetes way: a coordination.k8s.io
Lease, held by one identity and renewed; the others wait for it to expire.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger("trialforge.leader")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaderElection:
    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        identity: str,
        name: str = "trialforge-operator",
        lease_seconds: int = 15,
        renew_every: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.api = client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.identity = identity
        self.name = name
        self.lease_seconds = lease_seconds
        self.renew_every = renew_every
        self.on_change = on_change
        self._leader = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_leader(self) -> bool:
        return self._leader.is_set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self.is_leader:
            self._release()

    def wait(self, timeout: float | None = None) -> bool:
        return self._leader.wait(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                held = self._try_acquire()
            except Exception as exc:
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
                held = False
            if held != self.is_leader:
                (self._leader.set if held else self._leader.clear)()
                log.info(
                    "%s leadership of %s/%s",
                    "acquired" if held else "lost",
                    self.namespace,
                    self.name,
                )
                if self.on_change:
                    self.on_change(held)
            self._stop.wait(self.renew_every)

    def _spec(self, acquire: bool, old: client.V1LeaseSpec | None) -> client.V1LeaseSpec:
        now = _now()
        return client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=self.lease_seconds,
            acquire_time=now if acquire or old is None else old.acquire_time,
            renew_time=now,
            lease_transitions=((old.lease_transitions or 0) + (1 if acquire else 0)) if old else 0,
        )

    def _try_acquire(self) -> bool:
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=self._spec(True, None),
            )
            try:
                self.api.create_namespaced_lease(self.namespace, body)
                return True
            except ApiException as create_exc:
                if create_exc.status == 409:
                    return False
                raise
        spec = lease.spec
        holder = spec.holder_identity
        renewed = spec.renew_time or spec.acquire_time
        expired = renewed is None or (
            renewed + dt.timedelta(seconds=spec.lease_duration_seconds or self.lease_seconds)
            < _now()
        )
        if holder != self.identity and not expired and holder:
            return False
        lease.spec = self._spec(holder != self.identity, spec)
        try:
            # Replace carries the resourceVersion: two candidates cannot both win.
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def _release(self) -> None:
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            log.info("could not release the lease: %s", exc)
