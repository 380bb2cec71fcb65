"""The last lines of a trial's output, kept in its status when it ends.

A pruned or cancelled trial's Job is deleted, and a failed one's pods go with
their Job's cleanup; ``trialforge logs`` then reads ``status.logTail``, which
the operator fills once, when the trial ends, from the trainer container of
worker 0.  Bounded (:data:`MAX_LINES` lines of at most :data:`MAX_LINE_CHARS`
characters), so a Trial stays far below etcd's object size limit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from trialforge.api.status import MAX_LOG_TAIL_LINES
from trialforge.kube.observe import _main_pod

log = logging.getLogger(__name__)

MAX_LINES = MAX_LOG_TAIL_LINES
MAX_LINE_CHARS = 500
# What is asked of the API server: enough for MAX_LINES long lines, no more.
LIMIT_BYTES = MAX_LINES * (MAX_LINE_CHARS + 1) * 4
# The reconcile waits this long at most for a log (the API server asks the node's kubelet).
READ_TIMEOUT = 5.0


def bounded(text: str) -> list[str]:
    """The last MAX_LINES lines of ``text``, each cut to MAX_LINE_CHARS."""
    lines = text.splitlines()[-MAX_LINES:]
    return [
        line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 1] + "…" for line in lines
    ]


def trainer_name(template: Mapping[str, Any]) -> str | None:
    containers = (template.get("spec") or {}).get("containers") or []
    return containers[0].get("name") if containers else None


def read_tail(
    kube: Any, pods: Sequence[Mapping[str, Any]], template: Mapping[str, Any]
) -> list[str] | None:
    """The trainer's last lines from worker 0's pod; None when there is no pod or its
    log cannot be read (no kubelet to ask, the container never started)."""
    pod = _main_pod(pods)
    if pod is None:
        return None
    meta = pod["metadata"]
    try:
        text = kube.pod_log(
            meta["namespace"],
            meta["name"],
            trainer_name(template),
            tail_lines=MAX_LINES,
            limit_bytes=LIMIT_BYTES,
            timeout=READ_TIMEOUT,
        )
    except (ApiException, HTTPError, OSError) as exc:
        log.debug("no log tail for %s: %s", meta["name"], exc)
        return None
    return bounded(text)
