"""A tiny trainer for the local runtime's end-to-end tests; flags choose how it behaves.

It prints JSON lines ``{"step": i, "loss": v}`` and leaves evidence for the test
in ``--out``: one appended line per event in ``events.log``

    start <trial> <pid> <time> <attempt>
    child <trial> <pid>
    end   <trial> <pid> <time>

and, with ``--dump``, ``<trial>.env.json`` holding its argv and TRIALFORGE_*/TEST_* env.
Only the standard library, so a trial starts in a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True, type=Path)
parser.add_argument("--steps", type=int, default=3)
parser.add_argument("--sleep", type=float, default=0.0, help="seconds between steps")
parser.add_argument("--x", type=float, default=0.0, help="loss is (x - 0.3)**2 + 1/(step+1)")
parser.add_argument("--value", type=float, help="report this loss at every step instead")
parser.add_argument("--exit", type=int, default=0, help="exit code after the last step")
parser.add_argument("--fail-attempts", type=int, default=0, help="exit 1 while attempt < this")
parser.add_argument("--nan-at", type=int, help="the loss is NaN from this step on")
parser.add_argument("--junk", type=int, default=0, help="junk lines before each step")
parser.add_argument("--hang", action="store_true", help="start a child, then sleep for ever")
parser.add_argument("--ignore-term", action="store_true", help="ignore SIGTERM")
parser.add_argument("--values", help="V0,V1,...: trial i reports V[i] (the last for i beyond)")
parser.add_argument("--slow", default="", help="I,J,...: these trials run 200 steps, 50 ms apart")
parser.add_argument("--bad-from", type=int, help="indices >= this: terrible loss, slowly")
parser.add_argument("--gate-from", type=int, help="indices >= this wait for OUT/gate")
parser.add_argument("--dump", action="store_true", help="write argv and env to OUT")
parser.add_argument("--latency", action="store_true", help="also report latency_ms = 100 * x")
parser.add_argument("--note-steps", action="store_true", help="a 'step' event per step")
parser.add_argument(
    "--checkpoint",
    action="store_true",
    help="save each step in TRIALFORGE_CHECKPOINT_DIR, resume from it, save on SIGTERM",
)
args, _extra = parser.parse_known_args()

trial = os.environ.get("TRIALFORGE_TRIAL", "none-0")
match = re.search(r"-(\d+)(?:-r\d+)?$", trial)
index = int(match.group(1)) if match else -1
attempt = int(os.environ.get("TRIALFORGE_ATTEMPT", "0"))
args.out.mkdir(parents=True, exist_ok=True)


def note(line: str) -> None:
    # O_APPEND: short lines from concurrent trainers never interleave.
    fd = os.open(args.out / "events.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def report(step: int, loss: float) -> None:
    line: dict = {"step": step, "loss": loss}
    if args.latency:
        line["latency_ms"] = 100.0 * args.x
    if args.checkpoint:
        save(step)
        line["trialforge_checkpoint"] = step  # what trialforge.report(checkpoint=True) adds
    print(json.dumps(line), flush=True)


def save(step: int) -> None:
    # Inside the directory, never the directory itself (it may be a mount point).
    folder = Path(os.environ["TRIALFORGE_CHECKPOINT_DIR"])
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps({"step": step}))
    os.replace(tmp, folder / "state.json")


def resumed() -> int:
    path = Path(os.environ["TRIALFORGE_CHECKPOINT_DIR"]) / "state.json"
    return json.loads(path.read_text())["step"] + 1 if path.exists() else 0


if args.ignore_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
note(f"start {trial} {os.getpid()} {time.time():.6f} {attempt}")
if args.dump:
    env = {k: v for k, v in os.environ.items() if k.startswith(("TRIALFORGE_", "TEST_"))}
    (args.out / f"{trial}.env.json").write_text(json.dumps({"argv": sys.argv, "env": env}))

if args.hang:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(20)"])
    note(f"child {trial} {child.pid}")
    report(0, 1.0)
    time.sleep(20)

if attempt < args.fail_attempts:
    print(f"attempt {attempt} fails on purpose", flush=True)
    sys.exit(1)

bad = args.bad_from is not None and index >= args.bad_from
slow = bad or str(index) in args.slow.split(",")
values = [float(v) for v in args.values.split(",")] if args.values else None
gated = args.gate_from is not None and index >= args.gate_from
step = resumed() if args.checkpoint else 0
stopping: list[int] = []
if args.checkpoint:
    note(f"resume {trial} {step}")
    # As a trainer that saves on SIGTERM does: finish the step (reported and
    # saved), then leave with 128 + SIGTERM.
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
while step < (200 if slow else args.steps) or (gated and not (args.out / "gate").exists()):
    for _ in range(args.junk):
        print("epoch progress: ####---- (not a metric)", flush=True)
    if bad:
        loss = 1000.0
    elif values is not None:
        loss = values[min(index, len(values) - 1)]
    elif args.value is not None:
        loss = args.value
    else:
        loss = (args.x - 0.3) ** 2 + 1.0 / (step + 1)
    if args.nan_at is not None and step >= args.nan_at:
        loss = float("nan")
    report(step, loss)
    if args.note_steps:
        note(f"step {trial} {os.getpid()} {step}")
    if stopping:
        sys.exit(128 + signal.SIGTERM)
    step += 1
    time.sleep(0.05 if slow else args.sleep)

note(f"end {trial} {os.getpid()} {time.time():.6f}")
sys.exit(args.exit)
