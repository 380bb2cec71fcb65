"""The ingest endpoint: trials' collectors report observations here.

A batch is ``{"namespace", "trial", "token", "observations": [{"seq", "step",
"time", "metrics"}]}``.  The operator checks the trial's token, drops what it
already stored (by sequence number), refuses a gap (so the collector re-sends
in order), merges the rest into the Trial's status with a conditional write,
and answers with the last sequence number now stored in the cluster: what the
collector may forget.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.rest import ApiException

from trialforge.api.observation import Observation
from trialforge.api.status import TERMINAL_PHASES
from trialforge.engine import history
from trialforge.kube import names
from trialforge.kube.client import Kube
from trialforge.kube.reconcile import ingest_token

log = logging.getLogger("trialforge.ingest")
MAX_BATCH = 5000
CACHED_TRIALS = 2000


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    reason: str | None = None  # why it was rejected, for the metrics


def _bad(status: int, reason: str, message: str, stored: int | None = None) -> Answer:
    body: dict[str, Any] = {"error": message}
    if stored is not None:
        body["stored"] = stored
    return Answer(status, body, reason)


class Ingest:
    def __init__(
        self,
        kube: Kube,
        key: bytes,
        directions_for: Callable[[str, str], Mapping[str, str] | None],
        on_stored: Callable[[str, str], None],
        tails_for: Callable[[str, str], Mapping[str, int] | None] | None = None,
        rules_ttl: float = 10.0,
    ) -> None:
        self.kube = kube
        self.key = key
        self.directions_for = directions_for  # (namespace, experiment) -> metric directions
        self.tails_for = tails_for  # (namespace, experiment) -> last points a metric keeps
        self.on_stored = on_stored
        self.rules_ttl = rules_ttl
        self._rules: dict[tuple[str, str], tuple[float, dict[str, str], dict[str, int]]] = {}
        self._rules_lock = threading.Lock()
        # The Trial as our last write left it: the next batch patches it without a GET
        # first (the patch is conditional, so a stale copy costs a 409 and a re-read).
        self._trials: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._trials_lock = threading.Lock()

    def _cached(self, namespace: str, trial: str) -> dict[str, Any] | None:
        with self._trials_lock:
            return self._trials.get((namespace, trial))

    def _remember(self, namespace: str, trial: str, obj: dict[str, Any] | None) -> None:
        with self._trials_lock:
            key = (namespace, trial)
            if obj is None:
                self._trials.pop(key, None)
                return
            self._trials[key] = obj
            self._trials.move_to_end(key)
            while len(self._trials) > CACHED_TRIALS:
                self._trials.popitem(last=False)

    def rules(self, namespace: str, experiment: str) -> tuple[dict[str, str], dict[str, int]]:
        """The objectives' directions and tails, cached for a few seconds (not a read
        of the Experiment per request)."""
        key = (namespace, experiment)
        now = time.monotonic()
        with self._rules_lock:
            cached = self._rules.get(key)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        directions = dict(self.directions_for(namespace, experiment) or {})
        tails = dict((self.tails_for(namespace, experiment) if self.tails_for else None) or {})
        with self._rules_lock:
            self._rules[key] = (now + self.rules_ttl, directions, tails)
        return directions, tails

    def handle_bytes(self, raw: bytes) -> Answer:
        try:
            payload = json.loads(raw)
        except ValueError:
            return _bad(400, "malformed", "the body is not JSON")
        return self.handle(payload)

    def handle(self, payload: Any) -> Answer:
        if not isinstance(payload, dict):
            return _bad(400, "malformed", "the body must be a JSON object")
        namespace, trial, token = (
            payload.get("namespace"),
            payload.get("trial"),
            payload.get("token"),
        )
        batch = payload.get("observations")
        if not all(isinstance(v, str) and v for v in (namespace, trial, token)):
            return _bad(400, "malformed", "namespace, trial and token are required strings")
        if not isinstance(batch, list) or len(batch) > MAX_BATCH:
            return _bad(400, "malformed", f"observations must be a list of at most {MAX_BATCH}")
        if not hmac.compare_digest(str(token), ingest_token(self.key, namespace, trial)):
            return _bad(403, "bad_token", "the token is not this trial's")
        try:
            parsed = sorted(((int(o["seq"]), _observation(o)) for o in batch), key=lambda x: x[0])
        except (KeyError, TypeError, ValueError) as exc:
            return _bad(400, "malformed", f"bad observation: {exc}")
        cached = self._cached(namespace, trial)
        for attempt in range(8):  # conflicts with the reconciler's writes: re-read and retry
            obj = cached if attempt == 0 and cached is not None else None
            if obj is None:
                obj = self.kube.get_trial(namespace, trial)
                if obj is None:
                    self._remember(namespace, trial, None)
                    return _bad(404, "unknown_trial", f"no trial {namespace}/{trial}")
            status = obj.get("status") or {}
            stored = int(status.get("lastSequence") or 0)
            if status.get("phase") in TERMINAL_PHASES:
                self._remember(namespace, trial, None)
                return _bad(409, "trial_ended", f"trial {trial} has ended", stored)
            fresh = [(s, o) for s, o in parsed if s > stored]
            if not fresh:
                return Answer(200, {"stored": stored, "accepted": 0})
            if fresh[0][0] != stored + 1:
                return _bad(
                    409, "gap", f"expected sequence {stored + 1}, got {fresh[0][0]}", stored
                )
            # Keep only the contiguous run; a later gap is re-sent after this ack.
            run = [fresh[0]]
            for s, o in fresh[1:]:
                if s != run[-1][0] + 1:
                    break
                run.append((s, o))
            experiment = obj["spec"]["experiment"]
            directions, tails = self.rules(namespace, experiment)
            observations = [o for _, o in run]
            new_status = {
                "history": history.merge(
                    status.get("history") or {}, observations, directions, tails=tails
                ),
                "metrics": history.summarize(status.get("metrics") or {}, observations, directions),
                "lastSequence": run[-1][0],
            }
            try:
                updated = self.kube.patch_status(
                    names.TRIALS, namespace, trial, new_status, obj["metadata"]["resourceVersion"]
                )
            except ApiException as exc:
                self._remember(namespace, trial, None)
                if exc.status == 409:
                    continue
                if exc.status == 404:
                    return _bad(404, "unknown_trial", f"no trial {namespace}/{trial}")
                raise
            self._remember(namespace, trial, updated if isinstance(updated, dict) else None)
            self.on_stored(namespace, experiment)
            return Answer(200, {"stored": run[-1][0], "accepted": len(run)})
        return _bad(503, "conflict", "the trial is busy; retry", None)


def _observation(raw: Mapping[str, Any]) -> Observation:
    metrics = raw.get("metrics")
    if not isinstance(metrics, dict):
        raise ValueError("metrics must be an object")
    values = {}
    for name, value in metrics.items():
        if isinstance(value, bool):
            raise ValueError(f"metric {name!r} is not a number")
        values[str(name)] = float(value)  # "nan" and "inf" strings too
    t = raw.get("time")
    step = int(raw["step"])
    if step < 0:
        raise ValueError("step must be >= 0")
    return Observation(
        step, values, None if t is None else float(t) if math.isfinite(float(t)) else None
    )


def objective_tails(reconciler: Any, namespace: str, name: str) -> dict[str, int] | None:
    """How many last points each objective's history must keep: its ``window`` when
    its final value is the mean of the last k (the reconciler's cached spec)."""
    cached = reconciler._cache.get((namespace, name))
    spec = cached.planner.spec if cached else None
    if spec is None:
        return None
    return {o.metric: o.window for o in spec.all_objectives if o.final == "mean"}
