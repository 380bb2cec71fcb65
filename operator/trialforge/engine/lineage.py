"""What reproduces a trial, and where its artifact is: conventions both runtimes share.

**Artifacts.**  A trainer names what it produced (a model file, a checkpoint
folder, an object-store URI) with one JSON line ``{"artifact_uri": "..."}`` —
``trialforge.log_artifact(uri)`` writes it.  Locally the runner finds it in
the trial's output; on a cluster the same call also writes it to the
container's termination message (``/dev/termination-log``), which the
operator reads from the pod's status.  The last one reported wins; the best
trial's becomes ``status.best.artifactUri``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

ARTIFACT_KEY = "artifact_uri"


def artifact_uri(lines: Iterable[str]) -> str | None:
    """The last artifact URI reported in ``lines`` (a trial's output), or None."""
    found = None
    for line in lines:
        if ARTIFACT_KEY not in line:
            continue
        text = line.strip()
        start = text.find("{")
        if start < 0:
            continue
        try:
            data = json.loads(text[start:])
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get(ARTIFACT_KEY), str):
            found = data[ARTIFACT_KEY]
    return found
