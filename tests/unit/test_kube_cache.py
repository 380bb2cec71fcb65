"""The reconciler's cache of watched objects (kube/cache.py).

The cluster tests run the operator with it against the real control plane; these
pin down its rules: a LIST seeds it, watch events and our own writes keep it
current, it never steps back to an older version, and it lists again when told
or when its listing is old.
"""

from __future__ import annotations

from typing import Any

from trialforge.kube.cache import WorldCache


def obj(name: str, version: int | None, phase: str = "Running", xp: str = "xp") -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "ns",
        "labels": {"trialforge.io/experiment": xp},
        "managedFields": [{"manager": "kube-controller-manager"}],
    }
    if version is not None:
        meta["resourceVersion"] = str(version)
    return {"metadata": meta, "status": {"phase": phase}}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def phases(items: list[dict[str, Any]] | None) -> dict[str, str]:
    assert items is not None
    return {o["metadata"]["name"]: o["status"]["phase"] for o in items}


def test_nothing_is_trusted_before_a_listing() -> None:
    cache = WorldCache()
    cache.seen("trials", "ADDED", obj("xp-0", 5))
    assert cache.items("trials", "ns", "xp") is None
    cache.listed("trials", "ns", "xp", [obj("xp-0", 5), obj("xp-1", 6)])
    assert phases(cache.items("trials", "ns", "xp")) == {"xp-0": "Running", "xp-1": "Running"}


def test_watch_events_and_writes_keep_it_current_but_never_older() -> None:
    cache = WorldCache()
    cache.listed("trials", "ns", "xp", [obj("xp-0", 5)])
    cache.seen("trials", "MODIFIED", obj("xp-0", 9, "Succeeded"))
    cache.seen("trials", "ADDED", obj("xp-1", 10))
    assert phases(cache.items("trials", "ns", "xp")) == {"xp-0": "Succeeded", "xp-1": "Running"}
    # Our own write is ahead of the watch; the watch's older copy arrives later.
    cache.wrote("trials", obj("xp-1", 12, "Pruned"))
    cache.seen("trials", "MODIFIED", obj("xp-1", 11, "Running"))
    assert phases(cache.items("trials", "ns", "xp"))["xp-1"] == "Pruned"
    cache.seen("trials", "DELETED", obj("xp-0", 13))
    assert phases(cache.items("trials", "ns", "xp")) == {"xp-1": "Pruned"}


def test_a_listing_drops_what_is_gone_and_keeps_newer_watch_copies() -> None:
    cache = WorldCache()
    cache.listed("jobs", "ns", "xp", [obj("a", 1), obj("b", 2)])
    cache.seen("jobs", "MODIFIED", obj("b", 8, "Complete"))
    cache.listed("jobs", "ns", "xp", [obj("b", 3)])  # a LIST older than the watch
    assert phases(cache.items("jobs", "ns", "xp")) == {"b": "Complete"}


def test_objects_without_a_version_are_placeholders_the_watch_replaces() -> None:
    cache = WorldCache()
    cache.listed("jobs", "ns", "xp", [])
    cache.wrote("jobs", obj("xp-0", None, "Sent"))
    assert phases(cache.items("jobs", "ns", "xp")) == {"xp-0": "Sent"}
    cache.seen("jobs", "ADDED", obj("xp-0", 4, "Active"))
    assert phases(cache.items("jobs", "ns", "xp")) == {"xp-0": "Active"}


def test_experiments_are_kept_apart_and_unlabelled_objects_ignored() -> None:
    cache = WorldCache()
    cache.listed("pods", "ns", "a", [])
    cache.listed("pods", "ns", "b", [])
    cache.seen("pods", "ADDED", obj("a-0-x", 1, xp="a"))
    stray = obj("stray", 2)
    stray["metadata"]["labels"] = {}
    cache.seen("pods", "ADDED", stray)
    assert phases(cache.items("pods", "ns", "a")) == {"a-0-x": "Running"}
    assert cache.items("pods", "ns", "b") == []
    assert cache.size() == 1


def test_managed_fields_are_not_kept() -> None:
    cache = WorldCache()
    cache.listed("pods", "ns", "xp", [obj("p", 1)])
    (pod,) = cache.items("pods", "ns", "xp") or []
    assert "managedFields" not in pod["metadata"]


def test_it_lists_again_when_old_invalidated_or_forgotten() -> None:
    clock = Clock()
    cache = WorldCache(relist=60, clock=clock)
    cache.listed("trials", "ns", "xp", [obj("xp-0", 1)])
    clock.now = 59
    assert cache.items("trials", "ns", "xp") is not None
    clock.now = 61
    assert cache.items("trials", "ns", "xp") is None
    cache.listed("trials", "ns", "xp", [obj("xp-0", 1)])
    cache.invalidate()
    assert cache.items("trials", "ns", "xp") is None
    cache.listed("trials", "ns", "xp", [obj("xp-0", 1)])
    cache.forget("ns", "xp")
    assert cache.items("trials", "ns", "xp") is None
    assert cache.size() == 0
