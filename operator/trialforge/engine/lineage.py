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
from typing import Any

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


def trial_spec_fields(spec: Any, action: Any) -> dict[str, Any]:
    """What a new Trial's spec records beside its parameters and seed (wire names).

    ``spec`` is the ExperimentSpec, ``action`` the planner's StartTrial: the
    trial's role in the design, its configuration and repeat, and the code and
    data versions it runs, so the Trial alone says what reproduces it.
    """
    fields = {
        "role": action.role,
        "config": action.config,
        "repeat": action.repeat,
        "searchIndex": action.search_index,
        "codeVersion": spec.code_version,
        "dataVersion": spec.data_version,
    }
    return {k: v for k, v in fields.items() if v is not None}
