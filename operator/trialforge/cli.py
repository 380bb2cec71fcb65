"""The ``trialforge`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trialforge import __version__

EPILOG = """examples:
  trialforge run examples/digits-tpe-asha.yaml      run an experiment on this machine
  trialforge validate examples/*.yaml               check specs, print every error
  trialforge crds --check                           are crds/ in sync with the models?
  trialforge list                                   local runs (-n NS / -A: the cluster's)
  trialforge status NAME                            one experiment, and what holds it back
  trialforge logs TRIAL -f                          a trial's output, followed
  trialforge import katib katib.yaml > xp.yaml      a Katib Experiment as a Trialforge one

The same YAML is a cluster Experiment: kubectl apply -f examples/digits-tpe-asha.yaml
"""


def _cmd_validate(args: argparse.Namespace) -> int:
    from trialforge.engine.validation import ExperimentInvalid, load_experiment_file

    failed = 0
    for path in args.files:
        try:
            experiment = load_experiment_file(path)
        except ExperimentInvalid as exc:
            failed += 1
            print(f"{path}: invalid", file=sys.stderr)
            for error in exc.errors:
                print(f"  {error}", file=sys.stderr)
            continue
        spec = experiment.spec
        if not spec.trial.template["spec"]["containers"][0].get("command"):
            # Valid (with metrics source stdout it is an error): a cluster runs the
            # image's entrypoint, but trialforge run has nothing to run locally.
            print(
                f"{path}: warning: spec.trial.template.spec.containers[0].command is not set; "
                "a cluster runs the image's entrypoint, trialforge run cannot run it locally",
                file=sys.stderr,
            )
        objectives = ", ".join(f"{o.direction} {o.metric}" for o in spec.all_objectives)
        if spec.arms or spec.repeats > 1 or spec.baseline is not None:
            from trialforge.engine.planner import design_summary

            design = design_summary(spec)
        else:
            design = f"{spec.budget.max_trials} trials"
        search = "no search (arms)" if spec.arms else f"{spec.search.algorithm} search"
        print(
            f"{path}: ok — {experiment.name}: {objectives}; {len(spec.parameters)} parameters; "
            f"{search}, {spec.early_stopping.algorithm} early stopping; "
            f"{design}, {spec.budget.parallelism} at a time"
        )
    return 1 if failed else 0


def _cmd_crds(args: argparse.Namespace) -> int:
    from trialforge.api.crd import all_crds, render

    out = Path(args.output)
    drift = []
    for name, crd in all_crds().items():
        text = render(crd)
        path = out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                drift.append(str(path))
        elif args.stdout:
            sys.stdout.write("---\n" + text)
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if drift:
        print(
            "out of date with the models: " + ", ".join(drift) + "\nrun: trialforge crds",
            file=sys.stderr,
        )
        return 1
    return 0


LIVE_ROWS = 30  # trials the live table shows: the active ones, then the latest


def _latest_metrics(observations: dict[str, list[Any] | None]) -> dict[str, dict[str, float]]:
    """Each trial's latest metrics and step, for the trials table."""
    return {n: {**o[-1].metrics, "__step__": o[-1].step} for n, o in observations.items() if o}


def _cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from trialforge.engine.errors import EngineError
    from trialforge.engine.validation import ExperimentInvalid, load_experiment_file
    from trialforge.local.runner import LocalRunError, LocalRunner, local_command
    from trialforge.reporting import table

    # With --json, stdout holds only the JSON: what a person reads goes to stderr.
    console = Console(stderr=args.json)
    try:
        experiment = load_experiment_file(args.file)
    except ExperimentInvalid as exc:
        print(f"{args.file}: invalid", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return 2
    workdir = Path(args.file).resolve().parent
    run_dir = Path(args.dir) if args.dir else Path("runs") / experiment.name
    image = (experiment.spec.trial.template["spec"]["containers"][0]).get("image")
    try:
        argv = local_command(experiment)
    except LocalRunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        console.print(
            f"[dim]running locally in {workdir}: {' '.join(argv)}"
            + (f"\n(the image {image} is used on a cluster only)" if image else "")
            + f"\nrecording to {run_dir}[/dim]"
        )

    live: Live | None = None
    drawn = [-math.inf]  # when the table was last built (time.monotonic())

    def update(runner: LocalRunner, plan: Any) -> None:
        # Built at most 5 times a second (the display refreshes 4 times), from the
        # rows it shows only: a round's cost does not grow with the trials run.
        if live is None:
            return
        now = time.monotonic()
        if now - drawn[0] < 0.2 and plan.finished is None:
            return
        drawn[0] = now
        best = plan.best.name if plan.best else None
        shown = runner.recent_records(LIVE_ROWS)
        grid = table.trials_table(
            runner.spec,
            shown,
            _latest_metrics({r.name: runner.observations.get(r.name) for r in shown}),
            best,
            max_rows=LIVE_ROWS,
            width=console.width,
            experiment=runner.name,
            total=len(runner.records),
        )
        live.update(table.progress(runner.name, runner.spec, plan, grid))

    try:
        runner = LocalRunner(experiment, run_dir, workdir, on_update=update)
    except (LocalRunError, EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    show_live = not args.quiet and console.is_terminal and not args.no_table
    try:
        if show_live:
            with Live(console=console, refresh_per_second=4, transient=False) as live_view:
                live = live_view
                result = runner.run()
        else:
            result = runner.run()
    except (LocalRunError, EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _finish_run(args, console, runner, result, time.monotonic() - started, show_live)
    if result.interrupted:
        return 130
    return 0 if result.phase == "Succeeded" else 1


def _finish_run(
    args: argparse.Namespace,
    console: Any,
    runner: Any,
    result: Any,
    elapsed: float,
    shown_live: bool,
) -> None:
    """After a local run: its summary for a person, its plots, its state as JSON.

    The summary is printed before the plots are drawn: it is what a person waits for.
    """
    from trialforge.reporting import table

    plan = result.plan
    if not args.quiet:
        if not shown_live:
            best = plan.best.name if plan and plan.best else None
            console.print(
                table.trials_table(
                    runner.spec,
                    result.records,
                    _latest_metrics(runner.observations),
                    best,
                    max_rows=50,
                    width=console.width,
                    experiment=runner.name,
                )
            )
        console.print(table.headline(runner.name, runner.spec, plan))
        if plan and runner.spec.multi_objective and plan.pareto_front:
            console.print(table.pareto_table(runner.spec, plan))
        if plan and plan.comparison:
            compared = table.comparison_table(plan.comparison, width=console.width)
            if compared is not None:
                console.print(compared)
        style = "green" if result.phase == "Succeeded" else "red"
        console.print(
            f"[{style}]{result.phase}[/{style}] ({result.reason}): {result.message} "
            f"in {elapsed:.1f}s"
        )
    _import_importance_lightly()
    from trialforge.reporting import plots

    made = plots.write_all(
        runner.spec,
        result.records,
        runner.planner.search.study,
        plan.pareto_front if plan else [],
        runner.dir.root,
    )
    if not args.quiet:
        for path in made:
            console.print(f"[dim]plot: {path}[/dim]")
        console.print(f"[dim]records: {runner.dir.root}[/dim]")
    if args.json:
        print(json.dumps(runner.dir.load_state(), indent=1))


def _import_importance_lightly() -> None:
    """Import ``optuna.importance`` without scikit-learn, for the plots' PED-ANOVA.

    Importing the package imports its fANOVA and mean-decrease-impurity evaluators,
    which import scikit-learn when it is installed (the examples install it): 2.4 s
    of a short run's wall time, for evaluators the plots never use.  Optuna defers
    the ImportError of a missing scikit-learn until one of them is used, so the
    package is imported here with scikit-learn hidden; only this process (a
    finished ``trialforge run``) is affected, and only until the import is done.
    """
    if "optuna.importance" in sys.modules or "sklearn" in sys.modules:
        return
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # import sklearn: ImportError
    try:
        import optuna.importance  # noqa: F401
    finally:
        del sys.modules["sklearn"]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _number(at_least: float, strictly: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < at_least or (strictly and value == at_least):
            relation = ">" if strictly else ">="
            raise argparse.ArgumentTypeError(f"{text!r} must be a number {relation} {at_least:g}")
        return value

    return parse


_positive_float = _number(0.0, strictly=True)
_non_negative_float = _number(0.0, strictly=False)


def _cmd_operator(args: argparse.Namespace) -> int:
    from trialforge.kube.operator import OperatorConfig, run

    handler = logging.StreamHandler()
    if args.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()), handlers=[handler], force=True
    )
    key = None
    if args.ingest_key_file:
        key = Path(args.ingest_key_file).read_bytes().strip()
    elif os.environ.get("TRIALFORGE_INGEST_KEY"):
        key = os.environ["TRIALFORGE_INGEST_KEY"].encode()
    if args.all_namespaces and args.namespace:
        print("error: --namespace and --all-namespaces exclude each other", file=sys.stderr)
        return 2
    cfg = OperatorConfig(
        namespaces=[] if args.all_namespaces else (args.namespace or ["default"]),
        lease_namespace=args.lease_namespace,
        identity=args.identity or "",
        listen=args.listen,
        port=args.port,
        ingest_url=args.ingest_url,
        ingest_key=key,
        workers=args.workers,
        resync=args.resync,
        collector_image=args.collector_image,
        max_metric_series=args.max_metric_series,
        ingest_write_interval=args.ingest_write_interval,
        ingest_writes_per_second=args.ingest_writes_per_second,
    )
    run(cfg, args.kubeconfig)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trialforge",
        description="Run ML experiments: hyperparameter search, early stopping and "
        "statistics, on this machine or on Kubernetes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"trialforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_run(sub)
    _add_validate(sub)
    _add_crds(sub)
    _add_operator(sub)
    _add_collector(sub)
    from trialforge.reporting.commands import register  # report, reproduce, export

    register(sub)
    _add_inspect(sub)
    _add_import(sub)
    return parser


def _add_import(sub: Any) -> None:
    """trialforge import katib (reporting/import_commands.py)"""
    from trialforge.reporting.import_commands import register

    register(sub)


def _add_inspect(sub: Any) -> None:
    """trialforge list, status, logs (reporting/inspect_commands.py)"""
    from trialforge.reporting.inspect_commands import register

    register(sub)


def _add_run(sub: Any) -> None:
    """trialforge run"""
    run = sub.add_parser(
        "run",
        help="run an experiment's trials as local processes",
        description="Run an Experiment on this machine: each trial runs the first container's "
        "command (with ${params.NAME} filled in) as a subprocess in the YAML file's folder. "
        "Metrics are read from the trainer's stdout. Everything is recorded in the run "
        "directory; running again on the same directory resumes an interrupted experiment, "
        "or a finished one whose budget was raised (only the new trials run).",
    )
    run.add_argument("file", help="the Experiment YAML")
    run.add_argument("--dir", help="run directory (default: runs/<experiment name>)")
    run.add_argument("--no-table", action="store_true", help="no live table")
    run.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    run.add_argument("--json", action="store_true", help="print the final state as JSON")
    run.set_defaults(func=_cmd_run)


def _add_validate(sub: Any) -> None:
    """trialforge validate"""
    validate = sub.add_parser(
        "validate",
        help="check Experiment files and print every error with its field path",
        description="Validate Experiment YAML files. Exits 1 if any is invalid.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(func=_cmd_validate)


def _add_crds(sub: Any) -> None:
    """trialforge crds"""
    crds = sub.add_parser(
        "crds",
        help="write the CustomResourceDefinitions generated from the models",
        description="Write crds/experiments.trialforge.io.yaml and crds/trials.trialforge.io.yaml.",
    )
    crds.add_argument("--output", "-o", default="crds", help="folder (default: crds)")
    crds.add_argument("--check", action="store_true", help="exit 1 if the files differ")
    crds.add_argument("--stdout", action="store_true", help="print instead of writing")
    crds.set_defaults(func=_cmd_crds)


def _add_operator(sub: Any) -> None:
    """trialforge operator"""
    op = sub.add_parser(
        "operator",
        help="run the Kubernetes operator (from a kubeconfig or in-cluster)",
        description="Watch Experiments and run their trials as Jobs. Several replicas may run; "
        "a Lease elects the one that acts. Serves /healthz, /metrics and the ingest "
        "endpoint /v1/observations on --port.",
    )
    op.add_argument("--kubeconfig", help="default: $KUBECONFIG, ~/.kube/config, or in-cluster")
    op.add_argument(
        "--namespace",
        "-n",
        action="append",
        help="watch this namespace (repeatable; default: default)",
    )
    op.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    op.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="namespace of the leader-election Lease (default: $POD_NAMESPACE or default)",
    )
    op.add_argument("--identity", help="this replica's name in the Lease (default: host-pid)")
    op.add_argument("--listen", default="0.0.0.0", help="address to serve on")
    op.add_argument("--port", type=int, default=8080, help="port for /healthz, /metrics, ingest")
    op.add_argument(
        "--ingest-url",
        help="the URL trial pods reach the ingest endpoint at "
        "(e.g. http://trialforge.trialforge-system.svc:8080/v1/observations)",
    )
    op.add_argument(
        "--ingest-key-file",
        help="secret key for per-trial tokens (or $TRIALFORGE_INGEST_KEY); no key: ingest off",
    )
    op.add_argument(
        "--ingest-write-interval",
        type=_non_negative_float,
        default=1.0,
        metavar="SECONDS",
        help="a trial's received observations are written to its status at most once "
        "per interval (default 1.0); a trial whose trainer has ended is written at once",
    )
    op.add_argument(
        "--ingest-writes-per-second",
        type=_positive_float,
        default=20.0,
        metavar="N",
        help="status writes of all trials' observations together, at most (default 20): "
        "each write of a Trial with a full history costs the API server tens of ms; "
        "a trial whose trainer has ended is written outside this budget",
    )
    op.add_argument("--workers", type=int, default=4, help="experiments reconciled at once")
    op.add_argument(
        "--collector-image",
        default=os.environ.get("TRIALFORGE_COLLECTOR_IMAGE"),
        help="image of the metrics collector sidecar, normally the operator's own "
        "(or $TRIALFORGE_COLLECTOR_IMAGE); none: trial pods get no collector",
    )
    op.add_argument(
        "--max-metric-series",
        type=int,
        default=10_000,
        help="cap on trialforge_trial_metric series (default 10000)",
    )
    op.add_argument("--resync", type=float, default=30.0, help="seconds between resyncs")
    op.add_argument("--log-format", choices=["json", "text"], default="json")
    op.add_argument("--log-level", default="info")
    op.set_defaults(func=_cmd_operator)


def _add_collector(sub: Any) -> None:
    """trialforge collector"""
    col = sub.add_parser(
        "collector",
        help="the metrics sidecar of a trial pod (injected by the operator)",
        description="Read a trial's metrics (stdout copy, a file, pushes, TensorBoard events) "
        "and deliver them to the operator's ingest endpoint, numbered and re-sent until "
        "stored. Configured by TRIALFORGE_* variables (trialforge/metrics/contract.py names them); "
        "flags override them. The token is read from $TRIALFORGE_TOKEN only.",
    )
    for flag in ("ingest-url", "namespace", "trial", "source", "format", "pattern", "path"):
        col.add_argument(f"--{flag}")
    col.add_argument("--shared-dir")
    col.add_argument("--push-port", type=int)
    col.add_argument("--log-level", default="info")
    col.set_defaults(func=_cmd_collector)


def _cmd_collector(args: argparse.Namespace) -> int:
    from trialforge.metrics import collector

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s collector: %(message)s",
    )
    keys = ("ingest_url", "namespace", "trial", "source", "format", "pattern", "path")
    overrides = {k: getattr(args, k) for k in (*keys, "shared_dir", "push_port")}
    try:
        cfg = collector.Config.from_env(os.environ, **overrides)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return collector.main(cfg)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
