"""`trialforge run` at scale and as a user waits for it (issue 19, item 5).

Every figure is a whole command, interpreter start to exit, run as a
subprocess the way a user runs it (``python -m trialforge.cli``; stdout is not
a terminal, so no live table), with its wall and CPU seconds (the command's
own and its children's, from ``wait4``):

1. ``validate`` of one spec: examples/smoke.yaml (no sampler settings) and
   examples/digits-tpe-asha.yaml (settings, which Optuna's classes check);
   the median of ``--repeats`` runs.
2. A 6-trial run of an instant trainer (``python -c``, prints one JSON line),
   parallelism 2, with its summary and plots: the median of ``--repeats``.
3. 200 instant trials at parallelism 2 against a plain Optuna + subprocess loop
   launching the same trainer from 2 threads (``--child-plain``), the same
   sampler (random): one run each, and the ratio.
4. 10,000 instant trials (``sh -c 'echo ...'``: its cost is the runtime's,
   not an interpreter's start), random sampler, parallelism 2: the ms per trial
   at trials 9,000-10,000 over those at 0-1,000, from the trials' start times in
   the run directory's journal; the command's peak RSS.

Run::

    .venv/bin/python bench/local_scale.py                 # all, 10,000 trials
    .venv/bin/python bench/local_scale.py --trials 2000   # a shorter last part
    .venv/bin/python bench/local_scale.py --only 4        # one part
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SEED = 7
PY_TRAINER = (
    "import sys; x, y = float(sys.argv[1]), float(sys.argv[2]); "
    'print(\'{"step": 0, "loss": %r}\' % ((x - 0.3) ** 2 + (y + 0.2) ** 2))'
)


def py_argv(x: str, y: str) -> list[str]:
    return [sys.executable, "-c", PY_TRAINER, x, y]


def sh_argv(x: str, y: str) -> list[str]:
    return ["sh", "-c", f'echo \'{{"step": 0, "loss": {x}}}\'', "trainer", y]


def experiment(name: str, trials: int, parallelism: int, argv: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "trialforge.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "loss", "direction": "minimize"},
            "parameters": [
                {"name": "x", "type": "float", "min": -1, "max": 1},
                {"name": "y", "type": "float", "min": -1, "max": 1},
            ],
            "search": {"algorithm": "random", "seed": SEED},
            "budget": {"maxTrials": trials, "parallelism": parallelism},
            "trial": {
                "metrics": {"source": "stdout", "format": "json"},
                "template": {
                    "spec": {"containers": [{"name": "trainer", "image": "x:1", "command": argv}]}
                },
            },
        },
    }


def timed(argv: list[str], cwd: Path) -> dict[str, float]:
    """Wall, CPU (the process and its children) and peak RSS of one command."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "operator"), env.get("PYTHONPATH", "")])
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0,):
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,  # the largest of the process and its children
    }


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "trialforge.cli", *args]


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def part_validate(work: Path, repeats: int) -> dict[str, Any]:
    out = {}
    for name in ("smoke.yaml", "digits-tpe-asha.yaml"):
        spec = ROOT / "examples" / name
        out[name] = median_of([timed(cli("validate", str(spec)), work) for _ in range(repeats)])
    return out


def part_six(work: Path, repeats: int) -> dict[str, Any]:
    path = work / "six.yaml"
    path.write_text(yaml.safe_dump(experiment("six", 6, 2, py_argv("${params.x}", "${params.y}"))))
    runs = []
    for r in range(repeats):
        runs.append(timed(cli("run", str(path), "--dir", str(work / f"six-{r}")), work))
    return median_of(runs)


def plain_loop(trials: int, parallelism: int) -> None:
    """What an Optuna user writes by hand: ask, run the trainer, parse its line, tell."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.RandomSampler(SEED))
    dists = {
        "x": optuna.distributions.FloatDistribution(-1, 1),
        "y": optuna.distributions.FloatDistribution(-1, 1),
    }
    lock = threading.Lock()
    left = [trials]

    def worker() -> None:
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
                trial = study.ask(dists)
            out = subprocess.run(
                py_argv(repr(trial.params["x"]), repr(trial.params["y"])),
                capture_output=True,
                text=True,
                check=False,
            )
            value = None
            for line in out.stdout.splitlines():
                try:
                    value = float(json.loads(line)["loss"])
                except (ValueError, KeyError, TypeError):
                    continue
            with lock:
                if value is None:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                else:
                    study.tell(trial, value)

    threads = [threading.Thread(target=worker) for _ in range(parallelism)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(study.trials) == trials


def part_two_hundred(work: Path) -> dict[str, Any]:
    path = work / "two-hundred.yaml"
    doc = experiment("two-hundred", 200, 2, py_argv("${params.x}", "${params.y}"))
    path.write_text(yaml.safe_dump(doc))
    ours = timed(cli("run", str(path), "--dir", str(work / "two-hundred")), work)
    plain = timed([sys.executable, __file__, "--child-plain", "200", "2"], work)
    return {"trialforge": ours, "plain": plain, "ratio": ours["wall"] / plain["wall"]}


def part_scale(work: Path, trials: int) -> dict[str, Any]:
    path = work / "scale.yaml"
    path.write_text(yaml.safe_dump(experiment("scale", trials, 2, sh_argv("${params.x}", "y"))))
    run_dir = work / "scale"
    whole = timed(cli("run", str(path), "--dir", str(run_dir), "--quiet"), work)
    sys.path.insert(0, str(ROOT / "operator"))
    from trialforge.local.rundir import RunDirectory

    starts = sorted(r.start_time for r in RunDirectory(run_dir).load_trials() if r.start_time)
    assert len(starts) == trials, len(starts)
    window = trials // 10

    def ms_per_trial(first: int) -> float:
        return (starts[first + window - 1] - starts[first]) / (window - 1) * 1000

    early, late = ms_per_trial(0), ms_per_trial(trials - window)
    deciles = [round(ms_per_trial(i * window), 2) for i in range(10)]
    return {"whole": whole, "early_ms": early, "late_ms": late, "ratio": late / early,
            "deciles_ms": deciles}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10_000, help="part 4's trials")
    parser.add_argument("--repeats", type=int, default=5, help="runs of parts 1 and 2")
    parser.add_argument("--only", type=int, action="append", help="run only these parts")
    parser.add_argument("--child-plain", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_plain:
        plain_loop(*args.child_plain)
        return 0
    parts = set(args.only or (1, 2, 3, 4))
    work = Path(tempfile.mkdtemp(prefix="tf-local-scale-"))
    results: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    try:
        if 1 in parts:
            results["validate"] = part_validate(work, args.repeats)
        if 2 in parts:
            results["six"] = part_six(work, args.repeats)
        if 3 in parts:
            results["two_hundred"] = part_two_hundred(work)
        if 4 in parts:
            results["scale"] = part_scale(work, args.trials)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_after"] = os.getloadavg()[0]
    results["self_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
