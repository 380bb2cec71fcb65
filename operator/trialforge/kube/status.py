"""The status writer: an Experiment's status, as engine.status builds it, written sparingly.

Katib splits its experiment controller from the status writer; so do we.  The
reconcile decides and acts; this module only writes what the plan says the
status is, skips a write that changes nothing, coalesces writes that only move
the tallies (a big experiment changes them many times a second), and raises
the Events a phase change calls for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from trialforge.api.experiment import Experiment
from trialforge.api.validation import ExperimentInvalid
from trialforge.engine.planner import Plan
from trialforge.engine.record import timestamp
from trialforge.engine.status import FINISHED_PHASES, condition, experiment_status
from trialforge.kube import names
from trialforge.kube.client import Kube

log = logging.getLogger("trialforge.reconcile")

# Experiment status fields that only tally the trials; a change to nothing else
# is written at most once per TALLY_INTERVAL seconds.
TALLIES = frozenset({"trials", "gpuSeconds", "best", "bestValue", "comparison", "message"})
TALLY_INTERVAL = 1.0


class StatusWriter:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._written: dict[tuple[str, str], float] = {}  # monotonic time of the last write

    def forget(self, namespace: str, name: str) -> None:
        self._written.pop((namespace, name), None)

    def write(
        self,
        obj: Mapping[str, Any],
        experiment: Experiment,
        plan: Plan,
        gpu_seconds: float,
        started_at: float,
    ) -> float | None:
        """Write the experiment's status; returns seconds until a postponed write is due."""
        old = obj.get("status") or {}
        finished = plan.finished
        status = experiment_status(
            experiment.spec,
            plan,
            started_at=timestamp(old.get("startTime")) or started_at,
            completed_at=timestamp(old.get("completionTime")),
            gpu_seconds=gpu_seconds,
            generation=obj["metadata"].get("generation"),
            conditions=old.get("conditions") or [],
            now=time.time(),
        ).to_wire()
        for key in (
            "completionTime",
            "best",
            "bestValue",
            "paretoFront",
            "paretoFrontSize",
            "comparison",
        ):
            if key not in status and old.get(key) is not None:
                status[key] = None  # gone (resumed, say): a merge patch's null removes it
        changed = {k for k, v in status.items() if old.get(k) != v}
        if not changed:
            return None  # nothing changed: no write
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        since = time.monotonic() - self._written.get(key, float("-inf"))
        if changed <= TALLIES and since < TALLY_INTERVAL:
            # Only the counts moved: coalesce such writes to one per interval.
            return TALLY_INTERVAL - since
        self.kube.patch_status(names.EXPERIMENTS, *key, status)
        self._written[key] = time.monotonic()
        if finished is not None and old.get("phase") != finished.phase:
            kind = "Normal" if finished.phase == "Succeeded" else "Warning"
            self.kube.event(obj, kind, finished.reason, finished.message)
        elif finished is None and old.get("phase") in FINISHED_PHASES:
            self.kube.event(obj, "Normal", "Resumed", f"the spec changed: {status['message']}")
        return None

    def invalid(self, obj: Mapping[str, Any], exc: ExperimentInvalid) -> None:
        """Refuse a spec the API server let through; touch no running trial."""
        self.refuse(obj, "InvalidSpec", "; ".join(str(e) for e in exc.errors))

    def refuse(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        """SpecValid=False with ``reason`` (InvalidSpec, CannotPlan) and a Warning Event of
        that reason, once per message; touch no running trial."""
        old = obj.get("status") or {}
        message = message[:2000]
        conditions = [c for c in old.get("conditions") or [] if c.get("type") != "SpecValid"]
        previous = next(
            (c for c in old.get("conditions") or [] if c.get("type") == "SpecValid"), None
        )
        if previous and previous.get("status") == "False" and previous.get("message") == message:
            return
        generation = obj["metadata"].get("generation")
        now = time.time()
        refused = condition("SpecValid", "False", reason, message, previous, generation, now)
        conditions.append(refused.to_wire())
        status: dict[str, Any] = {"conditions": conditions, "observedGeneration": generation}
        if not old.get("phase"):
            status.update(phase="Pending", reason=reason, message=message)
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        self.kube.patch_status(names.EXPERIMENTS, namespace, name, status)
        self.kube.event(obj, "Warning", reason, message)
        log.warning("experiment %s/%s: %s: %s", namespace, name, reason, message)
