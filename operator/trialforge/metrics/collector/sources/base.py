"""What every metrics source is to the collector, and the registry of them by name.

A source is a plug-in behind one small interface, as Optuna's samplers are behind
``BaseSampler``: the collector asks it for what the trainer has reported since the last
time (:meth:`MetricsSource.poll`) and where it stands (:meth:`MetricsSource.position`,
kept in the journal's state so a restarted collector goes on from there).  Each source
registers itself under the names of ``spec.trial.metrics.source`` it serves
(:data:`trialforge.metrics.contract.METRICS_SOURCES`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from trialforge.api.observation import Observation
from trialforge.metrics.collector.config import Config
from trialforge.metrics.collector.journal import Journal
from trialforge.metrics.contract import METRICS_SOURCES
from trialforge.metrics.parsers import ObservationParser, ObservationReader, make_parser

MAX_LINE = 1 << 20  # a longer line is junk: the trainer is not reporting with it


class MetricsSource(ABC):
    """Reads what one trainer reports, from where it left off."""

    # False: the source puts reports into the journal itself as they arrive (push: the
    # trainer's report() returns once its observation is kept), so the collector does
    # not poll it, only waits for the trainer's end.
    polled: ClassVar[bool] = True

    @classmethod
    @abstractmethod
    def open(
        cls, cfg: Config, journal: Journal, reader: ObservationReader, saved: Mapping[str, Any]
    ) -> MetricsSource:
        """The source for ``cfg``, resumed from ``saved`` (a :meth:`position`, or {})."""

    @classmethod
    def parser(cls, cfg: Config) -> ObservationParser:
        """How the lines this source reads become observations."""
        return make_parser(cfg.format, cfg.pattern)

    @abstractmethod
    def poll(self, limit: int = 1 << 30, final: bool = False) -> list[Observation]:
        """What was reported since the last poll, up to about ``limit`` observations;
        ``final``: the trainer has ended, so what is unfinished is complete."""

    @abstractmethod
    def position(self) -> dict[str, Any]:
        """Where the observations handed out so far end (JSON: it goes in the journal)."""

    def start(self) -> None:  # noqa: B027 - a hook: only a source that listens needs it
        """Begin taking reports (a source that listens); the others need nothing."""

    @abstractmethod
    def close(self) -> None:
        """Release what the source holds open."""


# The sources by the name ``spec.trial.metrics.source`` gives them.
SOURCES: dict[str, type[MetricsSource]] = {}
_S = TypeVar("_S", bound=type[MetricsSource])


def register(name: str) -> Callable[[_S], _S]:
    """A class decorator: the source for ``name``."""
    if name not in METRICS_SOURCES:
        raise ValueError(f"{name!r} is not a metrics source of the contract")

    def add(cls: _S) -> _S:
        SOURCES[name] = cls
        return cls

    return add


def reader_state(reader: ObservationReader) -> dict[str, Any]:
    return {
        "last_step": reader.last_step,
        "lines": reader.lines,
        "observations": reader.observations,
        "junk": reader.junk,
        "blank": reader.blank,
    }


def restore_reader(reader: ObservationReader, saved: Mapping[str, Any]) -> None:
    reader.last_step = saved.get("last_step")
    for name in ("lines", "observations", "junk", "blank"):
        setattr(reader, name, int(saved.get(name) or 0))
