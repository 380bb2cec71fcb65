"""What the benchmarks share: a command's output, a free loopback port, an operator's
/healthz, a percentile."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
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


def wait_healthy(port: int, tries: int = 100, lease: float = 2.0) -> None:
    """Until the operator on loopback `port` answers /healthz (0.2 s apart), then the
    time its Lease takes to be acquired."""
    for _ in range(tries):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    time.sleep(lease)
