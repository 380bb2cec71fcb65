"""``trialforge collector``: the metrics sidecar of a trial pod.

It reads what the trainer reports, numbers each observation (``seq`` 1, 2, 3 …
per trial), keeps what the operator has not yet acknowledged in a bounded
journal on the pod's shared volume, and POSTs batches to the operator's ingest
endpoint.  Each answer carries two sequence numbers: ``received`` (the operator
holds everything up to it; the next batch starts after it, and one below what
was sent, from a restarted operator, means "send again from there") and
``stored`` (written to the Trial in the cluster: what the journal may forget).
A request with nothing new asks the operator to ``wait`` until what it received
is stored, so the collector learns it without polling.  Every answer names its
``reason`` (see ``trialforge.metrics.contract``, where the whole wire contract is
written down), and the collector acts on that code, not on the error's text.
A collector restarted in the same pod reads its journal back: it re-sends what
was not acknowledged and goes on numbering where it stopped, so no observation
is lost, repeated or skipped.  Standard library only (plus our parsers): it must stay small.

The package: ``config`` (the environment), ``journal``, ``sources`` (one plug-in
per source, :class:`MetricsSource`, registered by name in :data:`SOURCES`),
``client`` (delivery and backoff) and ``main`` (:class:`Collector`, :func:`main`).

Sources (``TRIALFORGE_METRICS_SOURCE``):

``stdout``
    The operator wraps the trainer's command in ``/bin/sh`` so that its output
    (stdout and stderr, merged) goes through ``tee`` into
    ``$TRIALFORGE_SHARED_DIR/stdout.log``; ``kubectl logs`` still shows it.  The
    collector tails that file.
``file``
    Tails ``TRIALFORGE_METRICS_PATH`` (relative paths are under the shared
    directory), surviving rotation (rename or copy-truncate) and partial lines.
``push``
    Listens on ``127.0.0.1:$TRIALFORGE_PUSH_PORT``; ``trialforge.report()`` posts
    one JSON observation per call to ``$TRIALFORGE_REPORT_URL``.
``tensorboard``
    Scalars from the event files under ``TRIALFORGE_METRICS_PATH`` (a log
    directory); needs the ``tensorboard`` extra.

The trainer's end: SIGTERM (the kubelet stops native sidecars once the trainer
has exited, and every container when the pod is deleted) makes the collector read
the source to its end, send everything, and exit 0 (1 if something could not be
delivered within ``TRIALFORGE_FLUSH_TIMEOUT``).  For the ``stdout`` source the
trainer's entrypoint also writes its exit code to ``$TRIALFORGE_SHARED_DIR/exit-code``
once its output is complete, which does the same without waiting for the kubelet.

Environment (flags of ``trialforge collector`` override them):

===============================  =================================================
``TRIALFORGE_INGEST_URL``        the operator's ``/v1/observations`` URL (required)
``TRIALFORGE_TOKEN``             the trial's token, from its Secret (required)
``TRIALFORGE_NAMESPACE``         the trial's namespace (required)
``TRIALFORGE_TRIAL``             the trial's name (required)
``TRIALFORGE_METRICS_SOURCE``    stdout | file | push | tensorboard (stdout)
``TRIALFORGE_METRICS_FORMAT``    json | keyvalue | regex (json)
``TRIALFORGE_METRICS_PATTERN``   the regex for format ``regex``
``TRIALFORGE_METRICS_PATH``      the file (``file``) or log directory (``tensorboard``)
``TRIALFORGE_SHARED_DIR``        the volume shared with the trainer (/trialforge)
``TRIALFORGE_PUSH_PORT``         the push server's port (9477)
``TRIALFORGE_RANK``              this pod's rank; only rank 0 reports (0)
``TRIALFORGE_BATCH_SIZE``        observations per request, at most (2000)
``TRIALFORGE_BUFFER_SIZE``       unacknowledged observations kept, at most (50000)
``TRIALFORGE_FLUSH_TIMEOUT``     seconds to deliver the rest after the end (25)
``TRIALFORGE_SEND_INTERVAL``     seconds between two requests while the trainer
                                 runs, on average (0.5; each pause is drawn from
                                 0.5-1.5 times it); the end sends at once
===============================  =================================================
"""

from trialforge.metrics.collector.client import (
    SEND_JITTER,
    IngestClient,
    backoff_delays,
    send_pause,
)
from trialforge.metrics.collector.config import Config
from trialforge.metrics.collector.journal import Journal, encode
from trialforge.metrics.collector.main import ON_REASON, STATE_DIR, Collector, main
from trialforge.metrics.collector.sources import (
    MAX_LINE,
    SOURCES,
    LineTail,
    MetricsSource,
    PushServer,
    PushSource,
    StdoutTail,
    TensorBoardSource,
    reader_state,
    restore_reader,
)

__all__ = [
    "MAX_LINE",
    "ON_REASON",
    "SEND_JITTER",
    "SOURCES",
    "STATE_DIR",
    "Collector",
    "Config",
    "IngestClient",
    "Journal",
    "LineTail",
    "MetricsSource",
    "PushServer",
    "PushSource",
    "StdoutTail",
    "TensorBoardSource",
    "backoff_delays",
    "encode",
    "main",
    "reader_state",
    "restore_reader",
    "send_pause",
]
