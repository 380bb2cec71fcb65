"""The sidecar contract: what the Job builder, the trainer, the metrics collector and
the operator's ingest endpoint agree on, written once.

The operator (``kube/jobs.py``) sets these environment variables, paths and ports in a
trial's pod; the trainer's wrapper and ``trialforge.report()`` and the collector sidecar
read them; the collector POSTs :class:`Batch` documents to the ingest endpoint, which
answers an :class:`AnswerBody` whose ``reason`` is one of :class:`Reason`.  A program
acts on the reason, never on the ``error`` text (that is for people).

Standard library only: the collector and the trainer's client import it, and they
must stay small (no pydantic, no Kubernetes client).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NotRequired, TypedDict

# -- environment: what every trial's trainer gets (locally too) ----------------------------
# (engine/template.py sets the first five for both runtimes; the engine may not import
# metrics, so it spells them itself and tests/unit/test_metrics_contract.py holds the two equal.)

ENV_EXPERIMENT = "TRIALFORGE_EXPERIMENT"
ENV_TRIAL = "TRIALFORGE_TRIAL"
ENV_PARAMS = "TRIALFORGE_PARAMS"
ENV_SEED = "TRIALFORGE_SEED"
ENV_ATTEMPT = "TRIALFORGE_ATTEMPT"
ENV_WORKERS = "TRIALFORGE_WORKERS"
# The directory every run and attempt of a trial shares for its checkpoints
# (docs/checkpoints.md); unset when the trial has none (a cluster trial
# without spec.trial.checkpoint).
ENV_CHECKPOINT_DIR = "TRIALFORGE_CHECKPOINT_DIR"
# The metric trialforge.report(step, checkpoint=True) adds: the step a
# checkpoint was saved at, as the step's value (every metrics source carries it).
CHECKPOINT_METRIC = "trialforge_checkpoint"
ENV_REPORT_URL = "TRIALFORGE_REPORT_URL"  # set for the push source only: report() posts there
ENV_TERMINATION_LOG = (
    "TRIALFORGE_TERMINATION_LOG"  # where log_artifact() writes, if not the default
)

# -- environment: the collector's (and the wrapper's) ---------------------------------------

ENV_INGEST_URL = "TRIALFORGE_INGEST_URL"
ENV_TOKEN = "TRIALFORGE_TOKEN"
ENV_NAMESPACE = "TRIALFORGE_NAMESPACE"
ENV_METRICS_SOURCE = "TRIALFORGE_METRICS_SOURCE"
ENV_METRICS_FORMAT = "TRIALFORGE_METRICS_FORMAT"
ENV_METRICS_PATTERN = "TRIALFORGE_METRICS_PATTERN"
ENV_METRICS_PATH = "TRIALFORGE_METRICS_PATH"
ENV_SHARED_DIR = "TRIALFORGE_SHARED_DIR"
ENV_PUSH_PORT = "TRIALFORGE_PUSH_PORT"
ENV_RANK = "TRIALFORGE_RANK"
ENV_BATCH_SIZE = "TRIALFORGE_BATCH_SIZE"
ENV_BUFFER_SIZE = "TRIALFORGE_BUFFER_SIZE"
ENV_FLUSH_TIMEOUT = "TRIALFORGE_FLUSH_TIMEOUT"
ENV_SEND_INTERVAL = "TRIALFORGE_SEND_INTERVAL"

# -- sources, paths, ports -------------------------------------------------------------------

# The names of ``spec.trial.metrics.source``; the collector has one plug-in for each.
METRICS_SOURCES = ("stdout", "file", "push", "tensorboard")
DEFAULT_SOURCE = "stdout"
DEFAULT_FORMAT = "json"
# Sources that read TRIALFORGE_METRICS_PATH (a file, or TensorBoard's log directory).
PATH_SOURCES = ("file", "tensorboard")

SHARED_DIR = "/trialforge"  # the emptyDir the trainer and the collector share
STDOUT_FILE = "stdout.log"  # the trainer's output, copied by its entrypoint, under the shared dir
EXIT_FILE = "exit-code"  # written (atomically) once the trainer's output is complete

PUSH_HOST = "127.0.0.1"  # where report() posts: only the pod's own containers may report
# In a pod the push server listens on every address of the pod: the kubelet's startup
# probe comes from the node to the pod's IP. Reports from anywhere but loopback are refused.
ENV_PUSH_LISTEN = "TRIALFORGE_PUSH_LISTEN"
POD_PUSH_LISTEN = "0.0.0.0"
PUSH_PORT = 9477
REPORT_PATH = "/report"
HEALTH_PATH = "/healthz"

INGEST_PATH = "/v1/observations"

# The sidecar container's command (the operator's image, entrypoint ``trialforge``).
COLLECTOR_COMMAND = ("trialforge", "collector")


def report_url(port: int = PUSH_PORT) -> str:
    """Where ``trialforge.report()`` posts in a pod whose source is ``push``."""
    return f"http://{PUSH_HOST}:{port}{REPORT_PATH}"


# -- the trainer's entrypoint ----------------------------------------------------------------

# For the ``stdout`` source the trainer's command becomes
# ``/trialforge/bin/trialforge-entrypoint -- CMD...``: a static program (entrypoint/,
# built into the operator's image) that an init container copies into the shared
# volume. It copies the trainer's output (stderr merged into stdout) to the container's
# stdout, which ``kubectl logs`` shows, and to :data:`STDOUT_FILE`; forwards every
# signal, SIGTERM above all, to the trainer at once; reaps orphans; and when the
# trainer ends writes its exit code to :data:`EXIT_FILE` (atomically, once the output
# is complete) and exits with it. The trainer image needs no shell and no tee.
# Other sources leave the user's command as it is: the kubelet stops the collector
# (a native sidecar) once the trainer has exited, and the exit code reaches the
# operator in the pod's status.
ENTRYPOINT_NAME = "trialforge-entrypoint"
ENTRYPOINT_DIR = f"{SHARED_DIR}/bin"
ENTRYPOINT = f"{ENTRYPOINT_DIR}/{ENTRYPOINT_NAME}"
# The init container's command (the operator's image has the program on its PATH).
ENTRYPOINT_INSTALL_COMMAND = (ENTRYPOINT_NAME, "install", ENTRYPOINT_DIR)


def entrypoint_command(command: Sequence[str]) -> list[str]:
    """``command`` run under the trainer's entrypoint."""
    return [ENTRYPOINT, "--", *command]


# -- authentication --------------------------------------------------------------------------


def ingest_token(key: bytes, namespace: str, trial: str) -> str:
    """The per-trial token: an HMAC the operator can check without storing it."""
    return hmac.new(key, f"{namespace}/{trial}".encode(), hashlib.sha256).hexdigest()


# -- what the collector sends ----------------------------------------------------------------


class WireObservation(TypedDict):
    """One observation in a batch."""

    seq: int  # 1, 2, 3 ... per trial, with no gap: the ingest refuses one
    step: int  # >= 0
    time: float | None  # Unix seconds, when the trainer reported it
    metrics: dict[str, float | str]  # non-finite values as the strings "nan", "inf", "-inf"


class Batch(TypedDict):
    """The body of a POST to :data:`INGEST_PATH`."""

    namespace: str
    trial: str
    token: str  # :func:`ingest_token` of the trial
    observations: list[WireObservation]  # in seq order; what the operator holds is skipped
    # Nothing new to send: hold the answer (at most the ingest's limit, seconds) until
    # everything received is stored, so the collector learns it without polling.
    wait: NotRequired[float]


def observation_json(seq: int, step: int, time: float, metrics: Mapping[str, float]) -> str:
    """One :class:`WireObservation`, encoded (JSON has no NaN: those travel as strings)."""
    values = {k: v if math.isfinite(v) else str(v) for k, v in metrics.items()}
    return json.dumps(
        {"seq": seq, "step": step, "time": time, "metrics": values}, separators=(",", ":")
    )


def batch_head(namespace: str, trial: str, token: str) -> bytes:
    """What every batch of one trial starts with; :func:`batch_bytes` finishes it."""
    head = json.dumps({"namespace": namespace, "trial": trial, "token": token})
    return (head[:-1] + ',"observations":[').encode()


def batch_bytes(head: bytes, observations: Sequence[str], wait: float = 0.0) -> bytes:
    """A :class:`Batch` from its head and encoded observations (no re-encoding of them)."""
    tail = b"]}" if not wait else b'],"wait":' + repr(float(wait)).encode() + b"}"
    return head + ",".join(observations).encode() + tail


# -- what the ingest answers -----------------------------------------------------------------


class Reason(StrEnum):
    """Why the ingest answered as it did: the ``reason`` of every answer."""

    ACCEPTED = "Accepted"  # held (``accepted`` of them new); ``stored`` may be less
    BAD_REQUEST = "BadRequest"  # not a valid batch: a collector bug
    UNAUTHORIZED = "Unauthorized"  # the token is not this trial's (a rotated key?)
    UNKNOWN_TRIAL = "UnknownTrial"  # no such Trial (yet, or any more)
    TRIAL_ENDED = "TrialEnded"  # the trial takes no more observations: stop sending
    SEQUENCE_GAP = "SequenceGap"  # the first new seq is not received + 1: send after it
    BUSY = "Busy"  # too much waits to be stored: back off, send again
    INGEST_DISABLED = "IngestDisabled"  # the operator runs without an ingest key
    TOO_LARGE = "TooLarge"  # the request is over the ingest's size limit: send less at once
    RATE_LIMITED = "RateLimited"  # too many requests for this trial: back off, send again
    TOO_SLOW = "TooSlow"  # the body did not arrive in time (a stalled or slowloris client)


# The HTTP status that goes with each reason (the reason says more).
HTTP_STATUS: dict[Reason, int] = {
    Reason.ACCEPTED: 200,
    Reason.BAD_REQUEST: 400,
    Reason.UNAUTHORIZED: 403,
    Reason.UNKNOWN_TRIAL: 404,
    Reason.TRIAL_ENDED: 409,
    Reason.SEQUENCE_GAP: 409,
    Reason.BUSY: 503,
    Reason.INGEST_DISABLED: 404,
    Reason.TOO_LARGE: 413,
    Reason.RATE_LIMITED: 429,
    Reason.TOO_SLOW: 408,
}


class AnswerBody(TypedDict, total=False):
    """The JSON body of every ingest answer."""

    reason: str  # a :class:`Reason`, always there
    error: str  # what went wrong, for people (every reason but ``Accepted``)
    # The last seq the operator holds in order: the next batch starts after it; one
    # below what was sent (a restarted operator) means "send again from there".
    received: int
    stored: int  # the last seq written to the Trial in the cluster: the collector may forget it
    accepted: int  # how many of this batch's observations were new (``Accepted`` only)


def answer_body(
    reason: Reason,
    error: str | None = None,
    *,
    stored: int | None = None,
    received: int | None = None,
    accepted: int | None = None,
) -> AnswerBody:
    body: AnswerBody = {"reason": reason.value}
    if error is not None:
        body["error"] = error
    if stored is not None:
        body["stored"] = stored
    if received is not None:
        body["received"] = received
    if accepted is not None:
        body["accepted"] = accepted
    return body


@dataclass(frozen=True)
class IngestAnswer:
    """An answer as the collector reads it."""

    status: int  # 0: no answer (the connection failed)
    reason: Reason | None  # None: no answer, or none the collector knows
    error: str = ""
    stored: int | None = None
    received: int | None = None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_answer(status: int, body: Mapping[str, Any]) -> IngestAnswer:
    """Parse an :class:`AnswerBody`; what is missing or malformed is None."""
    try:
        reason: Reason | None = Reason(body.get("reason"))
    except ValueError:
        reason = None
    stored = _count(body.get("stored"))
    received = _count(body.get("received"))
    error = body.get("error")
    return IngestAnswer(
        status=status,
        reason=reason,
        error=error if isinstance(error, str) else "",
        stored=stored,
        received=received if received is not None else stored,
    )
