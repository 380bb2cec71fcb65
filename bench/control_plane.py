#!/usr/bin/env python3
"""Measure the local control plane: first-build times, cache size, cached up/down.

    python3 bench/control_plane.py --runs 5          # markdown table on stdout
    python3 bench/control_plane.py --runs 5 --json   # raw numbers

Needs the binaries built (e2e/build); their first-build times come from the
build.json each build leaves in ~/.cache/trialforge/<tool>-<version>/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "e2e"))
import tfcluster  # noqa: E402


def du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            p = Path(root) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def mem_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024**2
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    tfcluster.ensure_built()
    cli = [sys.executable, str(REPO / "e2e" / "cluster")]
    name = f"bench-{os.getpid()}"
    state = REPO / "e2e" / ".state" / name
    ups: list[float] = []
    downs: list[float] = []
    rss: list[float] = []
    for _ in range(a.runs):
        t0 = time.monotonic()
        subprocess.run(
            [*cli, "--name", name, "--dir", str(state), "up"], check=True, capture_output=True
        )
        ups.append(time.monotonic() - t0)
        st = json.loads(
            subprocess.run(
                [*cli, "--name", name, "--dir", str(state), "status"],
                capture_output=True,
                text=True,
            ).stdout
        )
        total = 0
        for comp in st["components"].values():
            for line in Path(f"/proc/{comp['pid']}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        rss.append(total / 1024)
        t0 = time.monotonic()
        subprocess.run(
            [*cli, "--name", name, "--dir", str(state), "down"], check=True, capture_output=True
        )
        downs.append(time.monotonic() - t0)

    builds = {}
    for t in tfcluster.TOOLSET:
        f = tfcluster.tool_dir(t) / "build.json"
        if f.exists():
            builds[t.name] = json.loads(f.read_text())
    sizes = {t.name: du(tfcluster.tool_dir(t)) for t in tfcluster.TOOLSET}
    res = {
        "machine": {
            "nproc": os.cpu_count(),
            "mem_gib": round(mem_gib(), 1),
            "python": platform.python_version(),
            "go": subprocess.run(
                ["go", "env", "GOVERSION"], capture_output=True, text=True
            ).stdout.strip(),
        },
        "date": time.strftime("%Y-%m-%d"),
        "builds": builds,
        "cache_bytes": sizes,
        "up_s": [round(x, 2) for x in ups],
        "down_s": [round(x, 2) for x in downs],
        "rss_mib": [round(x) for x in rss],
    }
    if a.json:
        print(json.dumps(res, indent=2))
        return 0
    m = res["machine"]
    print(f"machine: {m['nproc']} cores, {m['mem_gib']} GiB, {m['go']}; date {res['date']}")
    print("\n| tool | version | build s | binaries MiB |\n|---|---|---|---|")
    for t in tfcluster.TOOLSET:
        b = builds.get(t.name, {})
        print(
            f"| {t.name} | {t.version()} | {b.get('seconds', '?')} | {sizes[t.name] / 2**20:.0f} |"
        )
    print(
        f"\nup   (s): median {statistics.median(ups):.2f}, min {min(ups):.2f}, "
        f"max {max(ups):.2f}, runs {ups}"
    )
    print(
        f"down (s): median {statistics.median(downs):.2f}, min {min(downs):.2f}, "
        f"max {max(downs):.2f}"
    )
    print(f"RSS of the 5 components right after up (MiB): {res['rss_mib']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
