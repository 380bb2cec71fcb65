"""What the benchmarks share: a command's output, a free loopback port, a percentile."""

from __future__ import annotations

import socket
import subprocess
from typing import Any


def sh(*args: str, **kw: Any) -> str:
    """A command's stdout; a failure raises."""
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]
