"""The ``tensorboard`` source: scalars from a log directory's event files."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trialforge.api.observation import Observation
from trialforge.metrics.collector.config import Config
from trialforge.metrics.collector.journal import Journal
from trialforge.metrics.collector.sources.base import MetricsSource, register
from trialforge.metrics.parsers import ObservationReader


@register("tensorboard")
class TensorBoardSource(MetricsSource):
    """Scalars from the event files under a log directory (the ``tensorboard`` extra).

    Event files are TFRecord files (a little-endian u64 length, its CRC, the record,
    its CRC) that only grow, and each new run adds one; the position is the byte
    offset read in each file, and a record not yet complete is read again next time.
    Only TensorBoard's protobuf ``Event`` is imported, not its loader (which brings
    numpy): the collector stays small.
    """

    def __init__(self, logdir: Path, saved: Mapping[str, Any]) -> None:
        try:
            from tensorboard.compat.proto import event_pb2
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise RuntimeError(
                "metrics source 'tensorboard' needs the tensorboard extra: "
                "pip install 'trialforge[tensorboard]'"
            ) from exc
        self._event = event_pb2.Event
        self.logdir = logdir
        self.offsets: dict[str, int] = {k: int(v) for k, v in (saved.get("offsets") or {}).items()}
        self.bad_records = 0

    @classmethod
    def open(
        cls, cfg: Config, journal: Journal, reader: ObservationReader, saved: Mapping[str, Any]
    ) -> TensorBoardSource:
        return cls(cfg.shared_path(cfg.path), saved)

    def position(self) -> dict[str, Any]:
        return {"offsets": dict(self.offsets)}

    def _files(self) -> list[Path]:
        if not self.logdir.exists():
            return []
        return sorted(p for p in self.logdir.rglob("*") if "tfevents" in p.name and p.is_file())

    def poll(self, limit: int = 1 << 30, final: bool = False) -> list[Observation]:
        found: list[Observation] = []
        for path in self._files():
            key = str(path.relative_to(self.logdir))
            offset = self.offsets.get(key, 0)
            with open(path, "rb") as f:
                f.seek(offset)
                while len(found) < limit:
                    head = f.read(12)
                    if len(head) < 12:
                        break
                    (length,) = struct.unpack("<Q", head[:8])
                    body = f.read(length + 4)
                    if len(body) < length + 4:
                        break  # still being written
                    offset += 16 + length
                    try:
                        event = self._event.FromString(body[:length])
                    except Exception:  # a corrupt record: counted, skipped
                        self.bad_records += 1
                        continue
                    obs = _scalar_observation(event)
                    if obs is not None:
                        found.append(obs)
            self.offsets[key] = offset
            if len(found) >= limit:
                break
        return found

    def close(self) -> None:
        pass  # each poll opens and closes the files it reads


_TENSOR_FORMATS = {1: "<f", 2: "<d", 3: "<i", 9: "<q", 19: "<e"}  # DT_FLOAT, DOUBLE, ...


def _scalar_observation(event: Any) -> Observation | None:
    if not event.HasField("summary"):
        return None
    metrics: dict[str, float] = {}
    for value in event.summary.value:
        kind = value.WhichOneof("value")
        if kind == "simple_value":
            metrics[value.tag] = float(value.simple_value)
        elif kind == "tensor":
            tensor = value.tensor
            if tensor.tensor_shape.dim:  # scalars only
                continue
            number = _tensor_scalar(tensor)
            if number is not None:
                metrics[value.tag] = number
    if not metrics:
        return None
    return Observation(step=max(0, int(event.step)), metrics=metrics, time=float(event.wall_time))


def _tensor_scalar(tensor: Any) -> float | None:
    for field_name in ("float_val", "double_val", "int_val", "int64_val"):
        values = getattr(tensor, field_name)
        if len(values):
            return float(values[0])
    fmt = _TENSOR_FORMATS.get(int(tensor.dtype))
    if fmt and len(tensor.tensor_content) == struct.calcsize(fmt):
        return float(struct.unpack(fmt, tensor.tensor_content)[0])
    return None
