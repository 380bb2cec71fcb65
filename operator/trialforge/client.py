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
import urllib.request
from typing import Any


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"metric {name!r} must be a number, not {type(value).__name__}")
    return float(value)


def report(step: int | None = None, **metrics: float) -> None:
    """Report metrics for one step, e.g. ``report(step=epoch, val_accuracy=0.93)``."""
    values = {k: _number(k, v) for k, v in metrics.items()}
    line: dict[str, Any] = {"step": step} if step is not None else {}
    line.update(values)
    url = os.environ.get("TRIALFORGE_REPORT_URL")
    if url:
        body = json.dumps({"time": time.time(), **line}, allow_nan=True).encode()
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        return
    text = json.dumps(line, allow_nan=True)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def parameters() -> dict[str, Any]:
    """This trial's parameters (from ``TRIALFORGE_PARAMS``), or {} outside a trial."""
    raw = os.environ.get("TRIALFORGE_PARAMS")
    return json.loads(raw) if raw else {}


def seed(default: int = 0) -> int:
    """This trial's seed (``TRIALFORGE_SEED``): use it so a trial can be reproduced."""
    return int(os.environ.get("TRIALFORGE_SEED", default))
