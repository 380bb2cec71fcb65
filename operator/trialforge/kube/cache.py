"""What the watches have shown: each experiment's Trials, Jobs and pods, in memory.

A reconcile looks at every Trial, Job and pod of its experiment.  Listing them
from the API server each time costs O(trials) of transfer and JSON per
reconcile, and a big experiment is reconciled many times a second; so, like
controller-runtime's cache-backed client, the reconciler reads what kopf's
watches already delivered.  The first read of an experiment (and one every
``relist`` seconds, which heals anything a watch restart might have missed)
still lists from the server.

A cache lags the server a little.  The reconcile is built to tolerate that:
names are deterministic (a create repeated from a stale view gets
AlreadyExists), conclusions and verdicts are conditional writes (a 409 means
"look again").  What the operator writes itself goes into the cache at once
(write-through), so its next reconcile does not redo it.

A pod that a disruption ended (its DisruptionTarget condition) is usually
deleted within moments (the Eviction API, the pod garbage collector), often
before a reconcile lists it: the cache keeps such a pod for
:data:`TOMBSTONE_SECONDS` after its deletion, so the reconcile still sees
how it ended and counts the disruption (counting is idempotent, by pod name).
An operator that was down meanwhile misses it: the Job has replaced the pod
anyway, so the trial runs on, only the disruption goes uncounted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from trialforge.kube import names
from trialforge.kube.client import Kube
from trialforge.kube.disruption import is_disrupted

KINDS = ("trials", "jobs", "pods")
Key = tuple[str, str, str]  # (kind, namespace, experiment)
TOMBSTONE_SECONDS = 600.0


def _version(obj: Mapping[str, Any]) -> int | None:
    value = obj.get("metadata", {}).get("resourceVersion")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _slim(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object without its managedFields (most of a pod's bytes, never read here)."""
    meta = obj.get("metadata") or {}
    if "managedFields" not in meta:
        return dict(obj)
    out = dict(obj)
    out["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    return out


class WorldCache:
    """Objects by (kind, namespace, experiment) and name; thread-safe."""

    def __init__(self, relist: float = 300.0, clock: Callable[[], float] = time.monotonic):
        self.relist = relist
        self.clock = clock
        self._lock = threading.Lock()
        self._objects: dict[Key, dict[str, dict[str, Any]]] = {}
        self._listed_at: dict[Key, float] = {}
        # Deleted pods that a disruption ended: (the pod, when it went).
        self._tombstones: dict[Key, dict[str, tuple[dict[str, Any], float]]] = {}

    @staticmethod
    def key_of(kind: str, obj: Mapping[str, Any]) -> Key | None:
        meta = obj.get("metadata") or {}
        experiment = (meta.get("labels") or {}).get(names.LABEL_EXPERIMENT)
        if not experiment or not meta.get("namespace") or not meta.get("name"):
            return None
        return (kind, meta["namespace"], experiment)

    def seen(self, kind: str, event_type: str | None, obj: Mapping[str, Any]) -> None:
        """A watch event (kopf's ``event``): ADDED, MODIFIED, DELETED, or None (listing)."""
        key = self.key_of(kind, obj)
        if key is None:
            return
        name = obj["metadata"]["name"]
        with self._lock:
            bucket = self._objects.setdefault(key, {})
            if event_type == "DELETED":
                last = bucket.pop(name, None)
                if kind == "pods":
                    gone = obj if is_disrupted(obj) else last
                    if gone is not None and is_disrupted(gone):
                        self._tombstones.setdefault(key, {})[name] = (_slim(gone), self.clock())
                return
            self._put(bucket, name, obj)

    def wrote(self, kind: str, obj: Mapping[str, Any]) -> None:
        """An object as the API server returned it to our own write."""
        self.seen(kind, "MODIFIED", obj)

    @staticmethod
    def _put(bucket: dict[str, dict[str, Any]], name: str, obj: Mapping[str, Any]) -> None:
        old = bucket.get(name)
        new_version, old_version = _version(obj), (_version(old) if old else None)
        # Watches deliver in order, but our write-through can be ahead of the
        # watch: never step back to an older version of an object.
        if new_version is not None and old_version is not None and new_version < old_version:
            return
        bucket[name] = _slim(obj)

    def items(self, kind: str, namespace: str, experiment: str) -> list[dict[str, Any]] | None:
        """The cached objects, or None when this experiment must be listed first."""
        key = (kind, namespace, experiment)
        with self._lock:
            listed = self._listed_at.get(key)
            if listed is None or self.clock() - listed > self.relist:
                return None
            items = list(self._objects.get(key, {}).values())
            graves = self._tombstones.get(key)
            if graves:
                now = self.clock()
                for name in [n for n, (_, at) in graves.items() if now - at > TOMBSTONE_SECONDS]:
                    del graves[name]
                live = {o["metadata"]["name"] for o in items}
                items += [pod for name, (pod, _) in graves.items() if name not in live]
            return items

    def listed(
        self, kind: str, namespace: str, experiment: str, items: list[dict[str, Any]]
    ) -> None:
        """Seed from a LIST: the list is the truth, except where a watch event is newer."""
        key = (kind, namespace, experiment)
        with self._lock:
            bucket = self._objects.setdefault(key, {})
            fresh = {o["metadata"]["name"] for o in items}
            for name in list(bucket):
                if name not in fresh:
                    del bucket[name]
            for obj in items:
                self._put(bucket, obj["metadata"]["name"], obj)
            self._listed_at[key] = self.clock()

    def forget(self, namespace: str, experiment: str) -> None:
        with self._lock:
            self._tombstones.pop(("pods", namespace, experiment), None)
            for kind in KINDS:
                self._objects.pop((kind, namespace, experiment), None)
                self._listed_at.pop((kind, namespace, experiment), None)

    def invalidate(self) -> None:
        """List everything again before trusting the cache (e.g. on becoming leader)."""
        with self._lock:
            self._listed_at.clear()

    def size(self) -> int:
        with self._lock:
            return sum(len(b) for b in self._objects.values())


class CachedKube(Kube):
    """:class:`Kube` whose lists of an experiment's objects come from a :class:`WorldCache`."""

    def __init__(self, api_client: Any, cache: WorldCache | None = None) -> None:
        super().__init__(api_client)
        self.cache = cache or WorldCache()

    def _cached(
        self,
        kind: str,
        namespace: str,
        experiment: str,
        fetch: Callable[[str, str], list[dict[str, Any]]],
    ) -> list[dict[str, Any]]:
        items = self.cache.items(kind, namespace, experiment)
        if items is None:
            self.cache.listed(kind, namespace, experiment, fetch(namespace, experiment))
            items = self.cache.items(kind, namespace, experiment) or []
        return items

    def list_trials(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        return self._cached("trials", namespace, experiment, super().list_trials)

    def list_jobs(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        return self._cached("jobs", namespace, experiment, super().list_jobs)

    def list_pods(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        return self._cached("pods", namespace, experiment, super().list_pods)

    def create_trial(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        created = super().create_trial(namespace, body)
        if created is not None:
            self.cache.wrote("trials", created)
        return created

    def get_trial(self, namespace: str, name: str) -> dict[str, Any] | None:
        trial = super().get_trial(namespace, name)
        if trial is not None:
            self.cache.wrote("trials", trial)
        return trial

    def patch_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        updated = super().patch_status(plural, namespace, name, status, resource_version)
        if plural == names.TRIALS and isinstance(updated, dict):
            self.cache.wrote("trials", updated)
        return updated

    def create(self, obj: Mapping[str, Any]) -> bool:
        created = super().create(obj)
        if created and obj.get("kind") == "Job":
            # A reconcile before the watch's ADDED event must not create it
            # again.  Without a resourceVersion, the watch's copy replaces it.
            self.cache.wrote("jobs", obj)
        return created
