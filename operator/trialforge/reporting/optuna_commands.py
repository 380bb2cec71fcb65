"""The ``dashboard`` and ``export optuna`` subcommands (registered by reporting.commands)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _source(args: argparse.Namespace) -> Any:
    from trialforge.reporting.optuna_mirror import ClusterSource, RunDirSource

    if args.experiment:
        if args.run_dir:
            raise ValueError("give a run directory or --experiment NAME, not both")
        return ClusterSource(args.namespace or "default", args.experiment, args.kubeconfig)
    if not args.run_dir:
        raise ValueError("give a run directory, or --experiment NAME [-n NAMESPACE]")
    return RunDirSource(args.run_dir)


_ERRORS = (ValueError, KeyError, FileNotFoundError, NotADirectoryError)


def _cmd_export_optuna(args: argparse.Namespace) -> int:
    from trialforge.reporting.optuna_mirror import export

    try:
        data = _source(args).read()
        summary = export(data, args.storage, args.study_name)
    except _ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"storage": args.storage, **summary}))
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from trialforge.reporting.dashboard import DashboardMissing, serve

    try:
        source = _source(args)
        return serve(
            source,
            host=args.host,
            port=args.port,
            storage=args.storage,
            study_name=args.study_name,
            interval=args.interval,
            once=args.once,
        )
    except DashboardMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the port is taken, the address is not this machine's
        print(f"error: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)  # fmt: skip
        return 2
    except _ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a trialforge run directory")
    parser.add_argument("--experiment", "-e", help="read this Experiment from the cluster")
    parser.add_argument("--namespace", "-n", help="the Experiment's namespace (cluster)")
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG, ~/.kube/config, in-cluster")
    parser.add_argument("--study-name", help="the Optuna study (default: the experiment's name)")


def add_export_optuna(targets: Any) -> None:
    """trialforge export optuna"""
    optuna = targets.add_parser(
        "optuna",
        help="write every trial into an Optuna storage (sqlite, journal file, ...)",
        description="Write the experiment as an Optuna study: every trial attempt with its "
        "state (pruned and failed too), parameters, intermediate values and lineage (user "
        "attributes). Trials already there (by name) are not written again.",
    )
    _source_options(optuna)
    optuna.add_argument(
        "--storage",
        required=True,
        help="sqlite:///study.db (any Optuna RDB URL), or a journal file path",
    )
    optuna.set_defaults(func=_cmd_export_optuna)


def add_dashboard(sub: Any) -> None:
    """trialforge dashboard"""
    dash = sub.add_parser(
        "dashboard",
        help="serve optuna-dashboard over a live mirror of an experiment",
        description="Mirror an experiment (a local run directory, or --experiment on the "
        "cluster) into an Optuna storage, keep the mirror up to date while the experiment "
        "runs, and serve optuna-dashboard over it on http://HOST:PORT/ (needs the dashboard "
        "extra). Trialforge's own plots are at /trialforge/.",
    )
    _source_options(dash)
    dash.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    dash.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free)")
    dash.add_argument(
        "--storage", help="keep the mirror in this Optuna storage (default: in memory)"
    )
    dash.add_argument(
        "--interval", type=float, default=2.0, help="seconds between reads (default 2)"
    )
    dash.add_argument(
        "--once", action="store_true", help="mirror once and serve, without following"
    )
    dash.set_defaults(func=_cmd_dashboard)
