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
   at trials 9,000-10,000 over those at 0-1,000, wall (from the trials' start
   times in the journal) and the runner's own CPU (sampled from /proc five times a
   second, against the trials started): CPU is the figure a loaded machine moves
   least; and the runner's RSS every 1,000 trials.
5. The same 10,000 trials through the engine alone (the planner as the local
   runtime drives it, no processes): CPU ms per trial, last tenth over first.

Run::

    .venv/bin/python bench/local_scale.py                 # all, 10,000 trials
    .venv/bin/python bench/local_scale.py --trials 2000   # a shorter last part
    .venv/bin/python bench/local_scale.py --only 4        # one part
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
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


def _cpu_and_rss(pid: int) -> tuple[float, float] | None:
    """CPU seconds (all threads, not children) and RSS in MB of a live process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    return (int(fields[11]) + int(fields[12])) / tick, int(fields[21]) * page / 2**20


def part_scale(work: Path, trials: int) -> dict[str, Any]:
    """The runner's own CPU (its threads, not the trainers) and RSS, sampled five times a
    second against the trials started so far (the trials/ folder holds one log each)."""
    path = work / "scale.yaml"
    path.write_text(yaml.safe_dump(experiment("scale", trials, 2, sh_argv("${params.x}", "y"))))
    run_dir = work / "scale"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "operator"), env.get("PYTHONPATH", "")])
    argv = cli("run", str(path), "--dir", str(run_dir), "--quiet")
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.DEVNULL)
    samples: list[tuple[int, float, float, float]] = []  # (trials, wall, cpu, rss)
    logs = run_dir / "trials"
    while proc.poll() is None:
        got = _cpu_and_rss(proc.pid)
        try:
            count = sum(1 for _ in os.scandir(logs))
        except OSError:
            count = 0
        if got is not None:
            samples.append((count, time.perf_counter() - started, *got))
        time.sleep(0.2)
    wall = time.perf_counter() - started
    assert proc.returncode == 0, proc.returncode
    sys.path.insert(0, str(ROOT / "operator"))
    from trialforge.local.rundir import RunDirectory

    starts = sorted(r.start_time for r in RunDirectory(run_dir).load_trials() if r.start_time)
    assert len(starts) == trials, len(starts)
    window = trials // 10

    def at(count: int, column: int) -> float:
        """A sampled column where ``count`` trials had started (the first sample past it)."""
        return next((s[column] for s in samples if s[0] >= count), samples[-1][column])

    def per_trial(first: int, column: int) -> float:
        return (at(first + window, column) - at(max(first, 1), column)) / window * 1000

    wall_ms = [(starts[i + window - 1] - starts[i]) / (window - 1) * 1000
               for i in range(0, trials, window)]  # fmt: skip
    # The last window ends with the first sample that saw every trial started, before
    # the summary and the plots; the end of the run is the last sample.
    cpu_ms = [per_trial(i, 2) for i in range(0, trials, window)]
    rss = [at(max(i, 1), 3) for i in range(0, trials + 1, window)]
    return {
        "wall_s": wall,
        "wall_ms_per_trial_deciles": [round(x, 2) for x in wall_ms],
        "wall_ratio_last_first": wall_ms[-1] / wall_ms[0],
        "cpu_ms_per_trial_deciles": [round(x, 2) for x in cpu_ms],
        "cpu_ratio_last_first": cpu_ms[-1] / cpu_ms[0],
        "cpu_s": samples[-1][2],
        "rss_mb_every_tenth": [round(x, 1) for x in rss],
        "rss_mb_last": next(r for *_, r in reversed(samples) if r > 0),
    }


def part_planner(trials: int) -> dict[str, Any]:
    """The engine alone, as the local runtime drives it (no processes): a trial ends, the
    planner plans (handed the trials it has not settled), the next starts; CPU ms per
    trial by tenth of the run."""
    sys.path.insert(0, str(ROOT / "operator"))
    from trialforge.api import load_experiment
    from trialforge.engine.planner import Planner, StartTrial
    from trialforge.engine.record import TrialRecord

    doc = experiment("planner", trials, 2, sh_argv("${params.x}", "y"))
    spec = load_experiment(doc).spec
    planner = Planner(spec, "planner")
    views: dict[str, TrialRecord] = {}
    running: list[str] = []
    marks: list[float] = []
    cpu = time.process_time()
    unsettled: set[str] = set()
    while True:
        unsettled -= {n for n in unsettled if planner.settled(n)}
        given = [views[n] for n in unsettled]
        plan = planner.plan(given, now=time.time(), settled_omitted=True)
        for action in plan.of(StartTrial):
            record = TrialRecord.start("planner", spec, action)
            views[record.name] = dataclasses.replace(record, phase="Running")
            running.append(record.name)
            unsettled.add(record.name)
            if len(views) % (trials // 10) == 0:
                marks.append(time.process_time() - cpu)
        if plan.finished is not None:
            break
        name = running.pop(0)
        x = float(views[name].parameters["x"])
        views[name] = dataclasses.replace(views[name], phase="Succeeded", values=(x,))
    marks.append(time.process_time() - cpu)
    window = trials // 10
    per = [(b - a) / window * 1000 for a, b in itertools.pairwise([0.0, *marks[:10]])]
    return {
        "cpu_ms_per_trial_deciles": [round(x, 3) for x in per],
        "cpu_ratio_last_first": per[-1] / per[0],
        "cpu_s": marks[-1],
    }


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
    parts = set(args.only or (1, 2, 3, 4, 5))
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
        if 5 in parts:
            results["planner"] = part_planner(args.trials)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_after"] = os.getloadavg()[0]
    results["self_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
