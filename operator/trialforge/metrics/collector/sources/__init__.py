"""The metrics sources, one plug-in per ``spec.trial.metrics.source``, found by name in
:data:`SOURCES`."""

from trialforge.metrics.collector.sources.base import (
    MAX_LINE,
    SOURCES,
    MetricsSource,
    reader_state,
    register,
    restore_reader,
)
from trialforge.metrics.collector.sources.lines import LineTail, StdoutTail
from trialforge.metrics.collector.sources.push import PushServer, PushSource
from trialforge.metrics.collector.sources.tensorboard import TensorBoardSource

__all__ = [
    "MAX_LINE",
    "SOURCES",
    "LineTail",
    "MetricsSource",
    "PushServer",
    "PushSource",
    "StdoutTail",
    "TensorBoardSource",
    "reader_state",
    "register",
    "restore_reader",
]
