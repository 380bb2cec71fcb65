"""The share of GPU time lost to disruptions, with checkpoints against without (issue 22).

The local runtime, real processes, the engine's disruption rule: an experiment
of ``--trials`` trials (default 50, ``--parallelism`` 5 at a time), each a
trainer (tests/unit/trainers/tiny.py) of ``--steps`` steps of ``--step-seconds``
each, standing for one GPU each.  While it runs, a disruption is injected every
``--every`` seconds: SIGTERM to a running trainer picked at random (as a
preemption or an eviction does on a cluster; locally the runner counts an
outside SIGTERM as a disruption and runs the trial again).

Three runs of the same experiment:

- **baseline**: no disruption; its trainer-seconds are the useful work;
- **without checkpoints**: a disrupted trial starts again from step 0;
- **with checkpoints**: the trainer saves every step in
  ``TRIALFORGE_CHECKPOINT_DIR`` and resumes after its last one (docs/checkpoints.md).

Two measures of the GPU time: the steps the trainers computed (from their own
event log; a step computed twice is lost work), which the machine's load does
not move, and the trainers' wall time (each run from its start to its end or
its kill, process start-up included), which it does.  Lost share = (what the
run took - the useful part) / what the run took; the useful part is
trials x steps, and for wall time the baseline's GPU-seconds.  Every experiment must succeed with
every trial's history complete (steps 0..steps-1, none repeated) for a result
to count.

Run::

    .venv/bin/python bench/disruption_cost.py            # print the table
    .venv/bin/python bench/disruption_cost.py --write    # and append it to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from trialforge.api import load_experiment  # noqa: E402
from trialforge.local.rundir import RunDirectory  # noqa: E402
from trialforge.local.runner import LocalRunner  # noqa: E402

TRAINER = REPO / "tests" / "unit" / "trainers" / "tiny.py"


def experiment(out: Path, args: argparse.Namespace, checkpoint: bool) -> dict[str, Any]:
    argv = ["python", str(TRAINER), "--out", str(out), "--x=${params.x}",
            "--steps", str(args.steps), "--sleep", str(args.step_seconds), "--note-steps"]  # fmt: skip
    if checkpoint:
        argv.append("--checkpoint")
    return {
        "apiVersion": "trialforge.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": "cost"},
        "spec": {
            "objective": {"metric": "loss", "direction": "minimize"},
            "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
            "search": {"algorithm": "random", "seed": 3},
            "budget": {
                "maxTrials": args.trials,
                "parallelism": args.parallelism,
                "maxFailedTrials": 0,
            },
            "trial": {
                "maxDisruptions": 1000,
                "template": {
                    "spec": {"containers": [{"name": "t", "image": "i", "command": argv}]}
                },
            },
        },
    }


def run(args: argparse.Namespace, mode: str, seed: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"tf-cost-{mode}-"))
    out = work / "out"
    doc = experiment(out, args, checkpoint=mode == "checkpoints")
    runner = LocalRunner(load_experiment(doc), work / "run", work, stop_grace=2.0)
    killed: dict[int, float] = {}  # pid -> when it was sent SIGTERM
    done = threading.Event()
    rng = random.Random(seed)

    def inject() -> None:
        while not done.wait(args.every):
            procs = [
                p
                for p in list(runner.processes.values())
                if p._proc is not None and not p.done and p._proc.pid not in killed
                and p.started_at is not None and time.time() - p.started_at > 0.3
            ]  # fmt: skip
            if not procs:
                continue
            victim = rng.choice(procs)
            killed[victim._proc.pid] = time.time()  # type: ignore[union-attr]
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim._proc.pid, signal.SIGTERM)  # type: ignore[union-attr]

    injector = threading.Thread(target=inject, daemon=True)
    if mode != "baseline":
        injector.start()
    t0 = time.monotonic()
    result = runner.run()
    wall = time.monotonic() - t0
    done.set()
    starts: dict[int, float] = {}
    ends: dict[int, float] = {}
    steps_run = 0
    for line in (out / "events.log").read_text().splitlines():
        kind, _trial, pid, *rest = line.split()
        if kind == "step":
            steps_run += 1
        elif kind == "start":
            starts[int(pid)] = float(rest[0])
        elif kind == "end":
            ends[int(pid)] = float(rest[0])
    gpu = 0.0
    for pid, began in starts.items():
        ended = ends.get(pid, killed.get(pid))
        if ended is None:
            raise AssertionError(f"run {pid} has neither an end nor a kill")
        gpu += max(0.0, ended - began)
    rd = RunDirectory(work / "run")
    records = rd.load_trials()
    assert result.phase == "Succeeded", result.message
    for record in records:
        steps = [o.step for o in rd.load_observations(record.name)]
        assert record.phase == "Succeeded" and record.attempt == 0, record
        assert steps == list(range(args.steps)), (record.name, steps)
    return {
        "mode": mode,
        "gpu": gpu,
        "wall": wall,
        "disruptions": sum(r.disruptions for r in records),
        "runs": len(starts),
        "steps": steps_run,
        "useful": args.trials * args.steps,
    }


def table(rows: list[dict[str, Any]]) -> str:
    base = rows[0]["gpu"]
    lines = [
        "| run | disruptions | trainer runs | steps computed (useful) | steps lost | "
        "GPU-seconds | GPU-seconds lost | wall (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lost = (r["gpu"] - base) / r["gpu"] if r["mode"] != "baseline" else 0.0
        steps_lost = (r["steps"] - r["useful"]) / r["steps"]
        lines.append(
            f"| {r['mode']} | {r['disruptions']} | {r['runs']} | {r['steps']} ({r['useful']}) | "
            f"{100 * steps_lost:.1f} % | {r['gpu']:.1f} | {100 * lost:.1f} % | {r['wall']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--parallelism", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--step-seconds", type=float, default=0.1)
    parser.add_argument("--every", type=float, default=3.0, help="seconds between disruptions")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    rows = [run(args, mode, args.seed) for mode in ("baseline", "no checkpoints", "checkpoints")]
    text = table(rows)
    print(text)
    if args.write:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        section = (
            f"\n## GPU time lost to disruptions, with and without checkpoints (issue 22, {now})\n\n"
            f"Machine: {platform.node()} ({os.cpu_count()} CPUs, shared), Python "
            f"{platform.python_version()}. The local runtime with real trainer processes "
            f"({args.trials} trials, {args.parallelism} at a time, {args.steps} steps of "
            f"{args.step_seconds} s each, one GPU per trial counted as the trainer's wall time); "
            f"a SIGTERM to a random running trainer every {args.every} s (what a preemption or "
            "an eviction sends); the runner counts each as a disruption and runs the trial "
            "again. Every experiment succeeded, every trial as attempt 0 with its history "
            "complete (no step repeated). Steps lost: steps computed beyond trials x steps, as a "
            "share of the steps computed; GPU-seconds lost: trainer wall time beyond the "
            "baseline's, as a share (this one moves with the shared machine's load).\n\n"
            f"{text}\n\n"
            "```sh\n.venv/bin/python bench/disruption_cost.py --write\n```\n"
        )
        with open(REPO / "bench" / "RESULTS.md", "a", encoding="utf-8") as handle:
            handle.write(section)


if __name__ == "__main__":
    main()
