"""The collector's configuration: the pod's ``TRIALFORGE_*`` variables, flags over them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trialforge.metrics import contract as c
from trialforge.metrics.parsers import make_parser


@dataclass
class Config:
    ingest_url: str
    token: str
    namespace: str
    trial: str
    source: str = c.DEFAULT_SOURCE
    format: str = c.DEFAULT_FORMAT
    pattern: str | None = None
    path: str | None = None
    shared_dir: Path = Path(c.SHARED_DIR)
    push_port: int = c.PUSH_PORT
    push_listen: str = c.PUSH_HOST
    rank: int = 0
    batch_size: int = 2000
    buffer_size: int = 50_000
    flush_timeout: float = 25.0
    poll_interval: float = 0.1
    # Fewer, larger requests: the operator's cost is mostly per request, and it
    # stores a trial's observations every few seconds under load anyway.
    send_interval: float = 0.5
    backoff_base: float = 0.2
    backoff_cap: float = 10.0
    request_timeout: float = 10.0
    wait_seconds: float = 2.0  # how long the operator may hold a request with nothing new

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Config:
        def pick(name: str, key: str, default: Any = None) -> Any:
            value = overrides.get(key)
            return value if value is not None else env.get(name, default)

        values: dict[str, Any] = {
            "ingest_url": pick(c.ENV_INGEST_URL, "ingest_url"),
            "token": pick(c.ENV_TOKEN, "token"),
            "namespace": pick(c.ENV_NAMESPACE, "namespace"),
            "trial": pick(c.ENV_TRIAL, "trial"),
        }
        missing = [k for k, v in values.items() if not v]
        if missing:
            raise ValueError(f"the collector needs {', '.join(missing)} (see its --help)")
        d = cls  # the defaults above
        cfg = cls(
            **values,
            source=pick(c.ENV_METRICS_SOURCE, "source", d.source),
            format=pick(c.ENV_METRICS_FORMAT, "format", d.format),
            pattern=pick(c.ENV_METRICS_PATTERN, "pattern") or None,
            path=pick(c.ENV_METRICS_PATH, "path") or None,
            shared_dir=Path(pick(c.ENV_SHARED_DIR, "shared_dir", d.shared_dir)),
            push_port=int(pick(c.ENV_PUSH_PORT, "push_port", d.push_port)),
            push_listen=pick(c.ENV_PUSH_LISTEN, "push_listen", d.push_listen),
            rank=int(pick(c.ENV_RANK, "rank", d.rank) or 0),
            batch_size=int(pick(c.ENV_BATCH_SIZE, "batch_size", d.batch_size)),
            buffer_size=int(pick(c.ENV_BUFFER_SIZE, "buffer_size", d.buffer_size)),
            flush_timeout=float(pick(c.ENV_FLUSH_TIMEOUT, "flush_timeout", d.flush_timeout)),
            send_interval=float(pick(c.ENV_SEND_INTERVAL, "send_interval", d.send_interval)),
        )
        cfg._check()
        return cfg

    def _check(self) -> None:
        if self.source not in c.METRICS_SOURCES:
            known = ", ".join(c.METRICS_SOURCES)
            raise ValueError(f"unknown metrics source {self.source!r}; known: {known}")
        if self.source in c.PATH_SOURCES and not self.path:
            raise ValueError(f"metrics source {self.source!r} needs {c.ENV_METRICS_PATH}")
        if self.batch_size < 1 or self.buffer_size < self.batch_size:
            raise ValueError("need 1 <= batch size <= buffer size")
        make_parser(self.format, self.pattern)  # fail now on a bad format or pattern

    def shared_path(self, path: str | None) -> Path:
        """``path`` as the collector opens it: a relative one is under the shared dir."""
        p = Path(path or "")
        return p if p.is_absolute() else self.shared_dir / p

    @property
    def exit_marker(self) -> Path:
        """Written by the wrapper once the trainer's output is complete."""
        return self.shared_dir / c.EXIT_FILE
