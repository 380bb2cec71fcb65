"""Local runtime overhead: `trialforge run` against a plain Optuna loop.

Issue 3's benchmark.  Two measurements:

1. **Trial loop.**  N trials (default 200) of a trainer that prints one JSON
   line and exits at once, run

   - by Trialforge's local runtime (``LocalRunner`` in-process, which is what
     ``trialforge run`` does after it has loaded the YAML), and
   - by a plain Optuna loop: ``study.ask()``, ``subprocess.run`` of the same
     argv with the same interpreter, parse the JSON line, ``study.tell()``,

   both sequential (parallelism 1) and with the same sampler (random, tpe), and
   at parallelism 4 against a plain loop on a pool of 4 threads (--no-parallel
   skips it).
   A third loop that only spawns the trainer N times (no Optuna) is the floor:
   what the trainer itself costs.  Each is run ``--repeats`` times, interleaved
   (plain, ours, spawn, then the next order), and the figures are the median
   and the minimum.  Overhead = ours / plain - 1, per repeat, then the median.
   Sequential runs also give the median trial cycle (one trainer's start to
   the next's), which a burst of the machine's noise hardly moves, and its
   overhead the same way.

   Once, ``trialforge run`` itself runs as a subprocess (interpreter start,
   imports, YAML, the run, the plots) against the plain loop run as a
   subprocess (interpreter start, ``import optuna``, the loop): wall time
   including start-up, reported separately.

2. **Engine ask/tell.**  The engine's time per trial, no processes: raw
   ``study.ask()/tell()`` against our ``Search.suggest()/finish()`` and against
   ``Planner.plan()`` (what the runtime calls: it syncs the trials into the
   search, tells what ended, asks for the next), with the same sampler, at 100
   and 1000 trials.

Run::

    .venv/bin/python bench/local_overhead.py            # print the tables
    .venv/bin/python bench/local_overhead.py --write    # and record them in bench/RESULTS.md
    .venv/bin/python bench/local_overhead.py --quick    # a fast smoke run (not for the record)
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna
import yaml

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
START = "<!-- local_overhead:start -->"
END = "<!-- local_overhead:end -->"
HEADING = "## Local runtime overhead"
SEED = 7

# The trainer: takes x and y on the command line, prints one JSON line, exits.
TRAINER = (
    "import sys; x, y = float(sys.argv[1]), float(sys.argv[2]); "
    'print(\'{"step": 0, "loss": %r}\' % ((x - 0.3) ** 2 + (y + 0.2) ** 2))'
)


def trainer_argv(x: Any, y: Any) -> list[str]:
    return [sys.executable, "-c", TRAINER, str(x), str(y)]


def experiment_doc(name: str, algorithm: str, trials: int, parallelism: int) -> dict[str, Any]:
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
            "search": {"algorithm": algorithm, "seed": SEED},
            "budget": {"maxTrials": trials, "parallelism": parallelism},
            "trial": {
                "metrics": {"source": "stdout", "format": "json"},
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "trainer",
                                "image": "python:3.11-slim",
                                "command": trainer_argv("${params.x}", "${params.y}"),
                            }
                        ]
                    }
                },
            },
        },
    }


def distributions() -> dict[str, optuna.distributions.BaseDistribution]:
    return {
        "x": optuna.distributions.FloatDistribution(-1, 1),
        "y": optuna.distributions.FloatDistribution(-1, 1),
    }


def raw_sampler(algorithm: str, parallelism: int) -> optuna.samplers.BaseSampler:
    """The sampler a plain Optuna user would write, with the settings Trialforge uses."""
    if algorithm == "random":
        return optuna.samplers.RandomSampler(seed=SEED)
    if algorithm == "tpe":
        return optuna.samplers.TPESampler(
            seed=SEED, multivariate=True, constant_liar=parallelism > 1
        )
    raise ValueError(algorithm)


def loss_of(params: dict[str, float]) -> float:
    return (params["x"] - 0.3) ** 2 + (params["y"] + 0.2) ** 2


# -- the trial loops ---------------------------------------------------------------

# The times (time.time()) each loop's trainers were started, left here for
# measure(): the gaps between them are the loop's trial cycles.
STARTS: list[float] = []


def median_cycle(starts: list[float]) -> float:
    """The median gap between consecutive trainer starts, in seconds.

    A trial's cycle (its trainer's run and the loop's work until the next
    starts) is measured 200 times a run, so a burst of the machine's noise
    moves its median much less than it moves the run's total time.
    """
    ordered = sorted(starts)
    return statistics.median(b - a for a, b in itertools.pairwise(ordered))


def run_trainer(params: dict[str, Any]) -> float | None:
    out = subprocess.run(
        trainer_argv(repr(params["x"]), repr(params["y"])),
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return None
    value = None
    for line in out.stdout.splitlines():
        try:
            value = float(json.loads(line)["loss"])
        except (ValueError, KeyError, TypeError):
            continue
    return value


def plain_loop(algorithm: str, trials: int, parallelism: int = 1) -> float:
    """The loop an Optuna user writes by hand; seconds for all trials."""
    started = time.perf_counter()
    study = optuna.create_study(direction="minimize", sampler=raw_sampler(algorithm, parallelism))
    dists = distributions()

    def one() -> None:
        trial = study.ask(dists)
        STARTS.append(time.time())
        value = run_trainer(trial.params)
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)

    if parallelism == 1:
        for _ in range(trials):
            one()
    else:
        lock = threading.Lock()
        left = [trials]

        def worker() -> None:
            while True:
                with lock:
                    if left[0] == 0:
                        return
                    left[0] -= 1
                one()

        with ThreadPoolExecutor(parallelism) as pool:
            for future in [pool.submit(worker) for _ in range(parallelism)]:
                future.result()
    elapsed = time.perf_counter() - started
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == trials, f"plain loop: {len(done)} of {trials} trials completed"
    return elapsed


def spawn_only(trials: int, parallelism: int = 1) -> float:
    """The floor: start the trainer N times and read its line, no search at all."""
    params = {"x": 0.1, "y": 0.2}

    def one(_: int = 0) -> float | None:
        STARTS.append(time.time())
        return run_trainer(params)

    started = time.perf_counter()
    if parallelism == 1:
        for _ in range(trials):
            assert one() is not None
    else:
        with ThreadPoolExecutor(parallelism) as pool:
            assert all(v is not None for v in pool.map(one, range(trials)))
    return time.perf_counter() - started


def trialforge_loop(algorithm: str, trials: int, parallelism: int, workdir: Path) -> float:
    """Trialforge's local runtime in this process (what `trialforge run` runs); seconds."""
    from trialforge.api.validation import load_experiment
    from trialforge.local.runner import LocalRunner

    started = time.perf_counter()
    experiment = load_experiment(experiment_doc("bench", algorithm, trials, parallelism))
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    result = LocalRunner(experiment, run_dir, workdir).run()
    elapsed = time.perf_counter() - started
    succeeded = sum(1 for r in result.records if r.phase == "Succeeded")
    # Taken when the runtime starts the trainer, as the plain loop takes its own.
    STARTS.extend(r.start_time for r in result.records if r.start_time is not None)
    assert result.phase == "Succeeded" and succeeded == trials, (
        f"trialforge: {result.phase} {result.reason} {result.message}; {succeeded} succeeded"
    )
    # The run directory stays until the benchmark ends (with workdir): deleting
    # hundreds of files between runs made each file the next runs created cost
    # up to 1 ms of system time instead of 0.2 (ext4 without a journal skips
    # inodes freed in the last 30 s; bench/RESULTS.md) -- a cost of the
    # benchmark's own cleanup, which a user's run does not pay.
    return elapsed


# -- the engine --------------------------------------------------------------------


def engine_raw(algorithm: str, trials: int) -> float:
    started = time.perf_counter()
    study = optuna.create_study(direction="minimize", sampler=raw_sampler(algorithm, 1))
    dists = distributions()
    for _ in range(trials):
        trial = study.ask(dists)
        study.tell(trial, loss_of(trial.params))
    return time.perf_counter() - started


def engine_search(algorithm: str, trials: int) -> float:
    from trialforge.api.validation import load_experiment
    from trialforge.engine.search import Search

    spec = load_experiment(experiment_doc("bench", algorithm, trials, 1)).spec
    started = time.perf_counter()
    search = Search(spec, "bench")
    for index in range(trials):
        suggestion = search.suggest(index)
        search.finish(index, "Succeeded", (loss_of(suggestion.parameters),))
    return time.perf_counter() - started


def engine_planner(algorithm: str, trials: int) -> float:
    """One plan() per trial, as the runtime calls it: the last trial ended, what next?"""
    from trialforge.api.validation import load_experiment
    from trialforge.engine.planner import Planner, StartTrial
    from trialforge.engine.record import TrialRecord

    spec = load_experiment(experiment_doc("bench", algorithm, trials, 1)).spec
    started = time.perf_counter()
    planner = Planner(spec, "bench")
    views: list[TrialRecord] = []
    while True:
        plan = planner.plan(views, now=time.time())
        if plan.finished is not None:
            break
        for start in plan.of(StartTrial):
            views.append(
                TrialRecord(
                    name=f"bench-{start.index}",
                    index=start.index,
                    attempt=start.attempt,
                    phase="Succeeded",
                    parameters=start.parameters,
                    seed=start.seed,
                    values=(loss_of(start.parameters),),
                    intermediate={0: loss_of(start.parameters)},
                    search_state=start.search_state,
                )
            )
    elapsed = time.perf_counter() - started
    assert len(views) == trials and plan.finished.reason == "BudgetExhausted", plan.finished
    return elapsed


# -- the CLI, once -----------------------------------------------------------------


def cli_once(algorithm: str, trials: int, workdir: Path) -> tuple[float, float]:
    """`trialforge run` as a subprocess vs the plain loop as a subprocess; wall seconds."""
    path = workdir / f"cli-{algorithm}.yaml"
    path.write_text(yaml.safe_dump(experiment_doc("bench-cli", algorithm, trials, 1)))
    run_dir = workdir / f"cli-run-{algorithm}"
    command = [sys.executable, "-m", "trialforge.cli", "run", str(path), "--dir", str(run_dir)]
    started = time.perf_counter()
    subprocess.run([*command, "--quiet", "--no-table"], check=True, cwd=workdir)
    ours = time.perf_counter() - started
    state = json.loads((run_dir / "state.json").read_text())
    assert state["phase"] == "Succeeded" and state["trials"]["succeeded"] == trials, state
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--child-plain", algorithm, str(trials)], check=True, cwd=workdir
    )
    plain = time.perf_counter() - started
    return ours, plain


# -- measuring ---------------------------------------------------------------------


def measure(
    runs: dict[str, Callable[[], float]], repeats: int, log: Callable[[str], None]
) -> dict[str, list[float]]:
    """Each callable ``repeats`` times, interleaved, the order rotated every repeat.

    Returns the seconds each run took (what the callable says), under
    ``NAME:cpu`` the CPU seconds this process spent in it, all its threads
    together, the trainers (child processes) not included, and under
    ``NAME:cycle`` the median trial cycle of each run that left its trainers'
    start times in STARTS.
    """
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    times.update({f"{n}:cpu": [] for n in names})
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            STARTS.clear()
            cpu = time.process_time()
            times[name].append(runs[name]())
            times[f"{name}:cpu"].append(time.process_time() - cpu)
            if len(STARTS) > 1:
                times.setdefault(f"{name}:cycle", []).append(median_cycle(STARTS))
            log(f"  repeat {r + 1}/{repeats} {name}: {times[name][-1]:.3f}s")
    return times


def ratios(ours: list[float], theirs: list[float]) -> list[float]:
    return [a / b - 1 for a, b in zip(ours, theirs, strict=True)]


def fmt_pct(x: float) -> str:
    return f"{x * 100:+.1f} %"


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with open("/proc/meminfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "operator"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout.strip()
        commit += " (+ uncommitted changes in operator/)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "ram": mem,
        "python": platform.python_version(),
        "optuna": optuna.__version__,
        "os": f"{platform.system()} {platform.release()}",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samplers", default="random,tpe")
    parser.add_argument("--engine-sizes", default="100,1000")
    parser.add_argument("--no-parallel", action="store_true", help="skip parallelism 4")
    parser.add_argument("--no-cli", action="store_true", help="skip the CLI subprocess run")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--write", action="store_true", help=f"record in {RESULTS}")
    parser.add_argument("--child-plain", nargs=2, metavar=("SAMPLER", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child_plain:
        plain_loop(args.child_plain[0], int(args.child_plain[1]))
        return 0
    if args.quick:
        args.trials, args.repeats, args.engine_sizes = 20, 1, "100"
    samplers = [s for s in args.samplers.split(",") if s]
    sizes = [int(s) for s in args.engine_sizes.split(",") if s]

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    info = machine()
    n = args.trials
    loops: list[dict[str, Any]] = []
    cli: list[dict[str, Any]] = []
    engine: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tf-bench-") as tmp:
        workdir = Path(tmp)
        # Warm the page cache and the imports before anything is timed.
        spawn_only(5)
        trialforge_loop("random", 3, 1, workdir)
        for parallelism in [1] if args.no_parallel else [1, 4]:
            for algorithm in samplers:
                log(f"trial loop: {algorithm}, parallelism {parallelism}, {n} trials")
                times = measure(
                    {
                        "plain": lambda a=algorithm, p=parallelism: plain_loop(a, n, p),
                        "trialforge": lambda a=algorithm, p=parallelism: trialforge_loop(
                            a, n, p, workdir
                        ),
                        "spawn": lambda p=parallelism: spawn_only(n, p),
                    },
                    args.repeats,
                    log,
                )
                loops.append({"algorithm": algorithm, "parallelism": parallelism, **times})
        if not args.no_cli:
            for algorithm in samplers:
                log(f"CLI: {algorithm}, {n} trials")
                ours, plain = cli_once(algorithm, n, workdir)
                log(f"  trialforge run {ours:.2f}s, plain loop script {plain:.2f}s")
                cli.append({"algorithm": algorithm, "trialforge": ours, "plain": plain})
        for size in sizes:
            for algorithm in samplers:
                log(f"engine: {algorithm}, {size} trials")
                times = measure(
                    {
                        "raw": lambda a=algorithm, s=size: engine_raw(a, s),
                        "search": lambda a=algorithm, s=size: engine_search(a, s),
                        "planner": lambda a=algorithm, s=size: engine_planner(a, s),
                    },
                    args.repeats,
                    log,
                )
                engine.append({"algorithm": algorithm, "trials": size, **times})

    text = render(info, args, loops, cli, engine)
    print(f"{HEADING}\n\n{text}")
    if args.write:
        if args.quick:
            print("not recording a --quick run", file=sys.stderr)
            return 1
        record(text)
        log(f"recorded in {RESULTS}")
    return 0


def render(
    info: dict[str, str],
    args: argparse.Namespace,
    loops: list[dict[str, Any]],
    cli: list[dict[str, Any]],
    engine: list[dict[str, Any]],
) -> str:
    n = args.trials
    med, low = statistics.median, min

    def cycles(row: dict[str, Any]) -> str:
        if row["parallelism"] != 1:
            return "— | —"  # trials overlap: a gap between starts is no trial's cycle
        plain, ours = row["plain:cycle"], row["trialforge:cycle"]
        return (
            f"{med(plain) * 1e3:.2f} / {med(ours) * 1e3:.2f} "
            f"| **{fmt_pct(med(ratios(ours, plain)))}**"
        )

    out = [
        f"`bench/local_overhead.py` (issue 3). Recorded {info['date']} at commit {info['commit']} "
        f"on {info['cpus']} CPUs ({info['cpu']}), {info['ram']} RAM, {info['os']}, "
        f"Python {info['python']}, Optuna {info['optuna']}.",
        "",
        "Reproduce: `.venv/bin/python bench/local_overhead.py "
        f"--trials {n} --repeats {args.repeats} --write`.",
        "",
        f"### Trial loop: {n} trials of a trainer that prints one JSON line and exits",
        "",
        "*plain*: `study.ask()`, `subprocess.run` of the same argv and interpreter, parse the "
        "line, `study.tell()`. *trialforge*: `LocalRunner.run()` in-process on the same "
        "experiment (what `trialforge run` runs after loading the YAML): a process group per "
        "trial, output pumped to a log (a new file per trial) and parsed, a line per trial in "
        "the journal of trial records with its observations (two for a trial longer than a "
        "second: its start, then its end), an event line, the "
        "planner at each trial's end (and at an observation a pruner judges, or a non-finite one; "
        "neither here). *spawn*: the trainer alone, N times, no search — the floor. "
        "Milliseconds "
        f"per trial, median (min) of {args.repeats} interleaved repeats; overhead = "
        "trialforge / plain - 1 per repeat, median (best). Above the floor = (loop - spawn) / "
        "N, from the medians. CPU: what the benchmark process itself (all its threads, not "
        "the trainers) spent per trial, median, plain / trialforge: on a busy machine every "
        "millisecond of it is taken from the trainers. Cycle: the median gap between one "
        "trainer's start and the next's within a run (its run and the loop's work until the "
        "next start), median over the repeats, plain / trialforge; overhead by cycle = "
        "trialforge / plain - 1 per repeat, median. A run's total moves with every burst of "
        "the machine's noise in it; a median of 200 cycles does not (sequential runs only: "
        "at parallelism 4 trials overlap).",
        "",
        "| sampler | parallelism | spawn ms/trial | plain ms/trial | trialforge ms/trial "
        "| plain above floor | trialforge above floor | CPU ms/trial | overhead vs plain "
        "| cycle ms | overhead by cycle |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in loops:
        spawn, plain, ours = row["spawn"], row["plain"], row["trialforge"]
        r = ratios(ours, plain)
        out.append(
            f"| {row['algorithm']} | {row['parallelism']} "
            f"| {med(spawn) / n * 1e3:.1f} ({low(spawn) / n * 1e3:.1f}) "
            f"| {med(plain) / n * 1e3:.1f} ({low(plain) / n * 1e3:.1f}) "
            f"| {med(ours) / n * 1e3:.1f} ({low(ours) / n * 1e3:.1f}) "
            f"| {(med(plain) - med(spawn)) / n * 1e3:+.1f} ms "
            f"| {(med(ours) - med(spawn)) / n * 1e3:+.1f} ms "
            f"| {med(row['plain:cpu']) / n * 1e3:.1f} / {med(row['trialforge:cpu']) / n * 1e3:.1f} "
            f"| **{fmt_pct(med(r))}** ({fmt_pct(min(r))}) | {cycles(row)} |"
        )
    if cli:
        out += [
            "",
            f"### Whole command, once: {n} trials, wall time including start-up",
            "",
            "`trialforge run FILE --quiet --no-table` (interpreter start, imports, YAML, the "
            "run, the plots it writes) against the plain loop run as a script "
            "(`python bench/local_overhead.py --child-plain SAMPLER N`: interpreter start, "
            "`import optuna`, the loop). One run each, so noisier than the table above.",
            "",
            "| sampler | plain script s | trialforge run s | difference |",
            "|---|---:|---:|---:|",
        ]
        for row in cli:
            out.append(
                f"| {row['algorithm']} | {row['plain']:.2f} | {row['trialforge']:.2f} "
                f"| {row['trialforge'] - row['plain']:+.2f} s "
                f"({fmt_pct(row['trialforge'] / row['plain'] - 1)}) |"
            )
    if engine:
        out += [
            "",
            "### Engine: ask/tell per trial, no processes",
            "",
            "*raw*: `study.ask()` + `study.tell()` on an in-memory study. *search*: our "
            "`Search.suggest()` + `Search.finish()` (it re-seeds the sampler for every ask, so "
            "a restarted run makes the same suggestions). *planner*: `Planner.plan()` once per "
            "trial with every trial so far, as the runtime calls it (sync, tell, ask). Same "
            "sampler and settings in all three (TPE: multivariate). Milliseconds per trial "
            f"(total seconds), median (min) of {args.repeats}; x = ours / raw from the medians.",
            "",
            "| sampler | trials | raw ms/trial | search ms/trial | planner ms/trial "
            "| search x | planner x |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in engine:
            size = row["trials"]
            raw, search, planner = row["raw"], row["search"], row["planner"]

            def cell(xs: list[float], size: int = size) -> str:
                return f"{med(xs) / size * 1e3:.2f} ({low(xs) / size * 1e3:.2f}) [{med(xs):.2f} s]"

            out.append(
                f"| {row['algorithm']} | {size} | {cell(raw)} | {cell(search)} "
                f"| {cell(planner)} | {med(search) / med(raw):.2f} "
                f"| {med(planner) / med(raw):.2f} |"
            )
    out += ["", verdict(loops, n)]
    return "\n".join(out) + "\n"


def verdict(loops: list[dict[str, Any]], n: int) -> str:
    """Whether the issue's target holds: sequential trials, each sampler (parallelism 4 aside).

    Said for both measures: the runs' totals and the median trial cycles.
    """

    def overhead(row: dict[str, Any], by: str = "") -> float:
        return statistics.median(ratios(row[f"trialforge{by}"], row[f"plain{by}"]))

    def extra(row: dict[str, Any]) -> float:
        return (statistics.median(row["trialforge"]) - statistics.median(row["plain"])) / n * 1e3

    sequential = [row for row in loops if row["parallelism"] == 1]
    if not sequential:
        return ""
    said = []
    for label, by in (("by the runs' totals", ""), ("by the median trial cycle", ":cycle")):
        met = all(overhead(row, by) <= 0.10 for row in sequential)
        figures = "; ".join(
            f"{row['algorithm']} {fmt_pct(overhead(row, by))}"
            + ("" if by else f" ({extra(row):+.1f} ms a trial)")
            for row in sequential
        )
        said.append(f"{label} {'met' if met else 'NOT met'}: {figures}")
    line = (
        "**Target (our overhead over the plain loop ≤ 10 %, sequential trials), in this run, "
        f"medians of {len(sequential[0]['plain'])} repeats:** " + "; ".join(said) + "."
    )
    parallel = [row for row in loops if row["parallelism"] > 1]
    if parallel:
        line += f" At parallelism {parallel[0]['parallelism']} (totals): " + "; ".join(
            f"{row['algorithm']} {fmt_pct(overhead(row))}" for row in parallel
        )
        line += "."
    return line


def record(text: str) -> None:
    """Replace the figures between the markers; the first time, add the section."""
    block = f"{START}\n{text.rstrip()}\n{END}\n"
    if RESULTS.exists():
        current = RESULTS.read_text()
    else:
        current = "# Benchmark results\n\nRecorded figures of the benchmarks in bench/.\n"
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END) + r"\n?", re.S)
    if pattern.search(current):
        updated = pattern.sub(lambda _: block, current)
    else:
        updated = current.rstrip("\n") + f"\n\n{HEADING}\n\n" + block
    RESULTS.write_text(updated)


if __name__ == "__main__":
    sys.exit(main())
