"""``trialforge.report()``: the trainer's side, standard library only.

Inside a trial pod whose metrics source is ``push``, the collector sidecar
listens on localhost and ``TRIALFORGE_REPORT_URL`` says where; everywhere else
(``trialforge run``, a plain ``python train.py``) an observation is one JSON line
on stdout, which both runtimes read.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from trialforge.metrics.contract import (
    CHECKPOINT_METRIC,
    ENV_CHECKPOINT_DIR,
    ENV_PARAMS,
    ENV_REPORT_URL,
    ENV_SEED,
    ENV_TERMINATION_LOG,
)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"metric {name!r} must be a number, not {type(value).__name__}")
    return float(value)


def report(step: int | None = None, checkpoint: bool = False, **metrics: float) -> None:
    """Report metrics for one step, e.g. ``report(step=epoch, val_accuracy=0.93)``.

    ``checkpoint=True`` says a checkpoint of this step is saved (in
    :func:`checkpoint_dir`): the trial records it as its last checkpoint step,
    and a run that resumes from it continues the trial's history from there.
    It travels as the metric ``trialforge_checkpoint`` (value: the step).
    """
    values = {k: _number(k, v) for k, v in metrics.items()}
    if checkpoint:
        if step is None:
            raise TypeError("report(checkpoint=True) needs the step the checkpoint is of")
        values[CHECKPOINT_METRIC] = float(step)
    line: dict[str, Any] = {"step": step} if step is not None else {}
    line.update(values)
    url = os.environ.get(ENV_REPORT_URL)
    if url:
        _push(url, json.dumps({"time": time.time(), **line}, allow_nan=True).encode())
        return
    text = json.dumps(line, allow_nan=True)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def log_artifact(uri: str) -> None:
    """Name what this trial produced (a path or URI) so Trialforge records it.

    One JSON line ``{"artifact_uri": uri}`` on stdout (read by ``trialforge run``)
    and, inside a Kubernetes container, the termination message at
    ``/dev/termination-log`` (read by the operator from the pod's status).
    The best trial's artifact becomes ``status.best.artifactUri``.
    """
    if not isinstance(uri, str) or not uri:
        raise TypeError("the artifact URI must be a non-empty string")
    line = json.dumps({"artifact_uri": uri})
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    path = os.environ.get(ENV_TERMINATION_LOG, "/dev/termination-log")
    if os.path.exists(path) and os.access(path, os.W_OK):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(line + "\n")


def _push(url: str, body: bytes, attempts: int = 60) -> None:
    """POST one observation to the collector sidecar.

    Retries while the sidecar is not listening yet (connection refused: nothing
    was received, so nothing is repeated) or its buffer is full (503)."""
    import urllib.error  # here: a trainer that only prints never pays for ssl and email
    import urllib.request

    for attempt in range(attempts):
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
            return
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or attempt == attempts - 1:
                raise
        except urllib.error.URLError as exc:
            if not isinstance(exc.reason, ConnectionRefusedError) or attempt == attempts - 1:
                raise
        time.sleep(min(2.0, 0.05 * 2**attempt))


def checkpoint_dir() -> Path | None:
    """The directory this trial keeps its checkpoints in, or None when it has none.

    Every run and attempt of a trial gets the same directory (``TRIALFORGE_CHECKPOINT_DIR``):
    locally a folder of the run directory, on a cluster the sub-path of the
    volume ``spec.trial.checkpoint`` names.  Save into it (write a new file,
    then rename it over the old one) and, at the start, resume from what is
    there.  The directory itself may be a mount point: it is created when
    missing, never replaced or re-permissioned.
    """
    raw = os.environ.get(ENV_CHECKPOINT_DIR)
    if not raw:
        return None
    path = Path(raw)
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
    return path


def parameters() -> dict[str, Any]:
    """This trial's parameters (from ``TRIALFORGE_PARAMS``), or {} outside a trial."""
    raw = os.environ.get(ENV_PARAMS)
    return json.loads(raw) if raw else {}


def seed(default: int = 0) -> int:
    """This trial's seed (``TRIALFORGE_SEED``): use it so a trial can be reproduced."""
    return int(os.environ.get(ENV_SEED, default))
