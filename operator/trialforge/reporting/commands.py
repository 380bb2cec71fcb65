"""The ``report``, ``reproduce`` and ``export`` subcommands (registered by cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", "-e", help="read this Experiment from the cluster")
    parser.add_argument("--namespace", "-n", help="the Experiment's namespace (cluster)")
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG, ~/.kube/config, in-cluster")


def _load(args: argparse.Namespace, run_dir: str | None) -> Any:
    from trialforge.reporting.rundata import from_cluster, from_run_dir

    if args.experiment:
        return from_cluster(args.namespace or "default", args.experiment, args.kubeconfig)
    if not run_dir:
        raise ValueError("give a run directory, or --experiment NAME [-n NAMESPACE]")
    return from_run_dir(run_dir)


def _cmd_report(args: argparse.Namespace) -> int:
    from trialforge.reporting.document import write_report

    try:
        data = _load(args, args.run_dir)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.output:
        out = Path(args.output)
    elif data.run_dir is not None:
        out = data.run_dir / f"report.{args.format}"
    else:
        out = Path(f"{data.name}-report.{args.format}")
    write_report(data, out, args.format)
    print(f"wrote {out}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from trialforge.reporting import reproduce
    from trialforge.reporting.rundata import from_cluster, from_run_dir

    trial = args.trial
    run_dir = args.dir
    # A trial's log (RUN_DIR/trials/NAME.log), or its record file in a run
    # directory written before the journal (RUN_DIR/trials/NAME.json).
    path = Path(trial)
    if run_dir is None and path.suffix in (".log", ".json") and path.parent.name == "trials":
        run_dir, trial = str(path.parent.parent), path.stem
    if run_dir is not None:
        try:
            data = from_run_dir(run_dir)
            record = data.record(trial)
        except (KeyError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if not args.run:
            print(reproduce.reproduction(data, record).shell())
            return 0
        result = reproduce.rerun(data, record, timeout=args.timeout)
        sys.stderr.write(result.output[-2000:])
        print(
            json.dumps(
                {
                    "trial": record.name,
                    "exitCode": result.exit_code,
                    "values": list(result.values) if result.values else None,
                    "recorded": list(result.recorded) if result.recorded else None,
                    "reproduced": result.same,
                }
            )
        )
        return 0 if result.same else 1
    if args.namespace or args.kubeconfig:
        from kubernetes import client, config

        from trialforge.kube.client import Kube

        try:
            config.load_kube_config(config_file=args.kubeconfig)
        except config.ConfigException:
            config.load_incluster_config()
        kube = Kube(client.ApiClient())
        namespace = args.namespace or "default"
        obj = kube.get_trial(namespace, trial)
        if obj is None:
            print(f"error: no Trial {namespace}/{trial}", file=sys.stderr)
            return 2
        data = from_cluster(namespace, obj["spec"]["experiment"], kube=kube)
        record = data.record(trial)
        repro = reproduce.reproduction(data, record)
        image = (data.spec.trial.template["spec"]["containers"][0]).get("image", "")
        digest = record.image_digest
        print(f"# reproduces Trial {namespace}/{trial} (seed {record.seed})")
        print(f"# image: {image}" + (f" (ran as {digest})" if digest else ""))
        print(f"# command: {repro.shell()}")
        print("# kubectl create -f - <<this file>>")
        print(reproduce.job_yaml(reproduce.cluster_job(data, obj)), end="")
        return 0
    print(
        "error: give --dir RUN_DIR (a local run) or -n NAMESPACE (a Trial on the cluster)",
        file=sys.stderr,
    )
    return 2


def _cmd_export_mlflow(args: argparse.Namespace) -> int:
    from trialforge.reporting.mlflow_export import MlflowMissing, export, summary

    try:
        data = _load(args, args.run_dir)
        result = export(data, args.tracking_uri, args.experiment_name, args.artifact_location)
    except MlflowMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary(result, args.tracking_uri)))
    return 0


def register(sub: Any) -> None:
    """Add the subcommands to cli.py's subparsers."""
    report = sub.add_parser(
        "report",
        help="write a self-contained HTML or Markdown report of an experiment",
        description="Report an experiment (a local run directory, or --experiment on the "
        "cluster): outcome, comparison with the baseline (intervals, p-values, verdicts), "
        "optimisation history, parameter importances, parallel coordinates, learning curves, "
        "lineage. "
        "Plots are embedded, so the file stands alone.",
    )
    report.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a trialforge run directory")
    report.add_argument("--format", "-f", choices=["html", "md"], default="html")
    report.add_argument("--output", "-o", help="default: RUN_DIR/report.FORMAT")
    _source_options(report)
    report.set_defaults(func=_cmd_report)

    repro = sub.add_parser(
        "reproduce",
        help="print (or run) the exact command that reproduces a trial",
        description="Locally (--dir RUN_DIR, or TRIAL as RUN_DIR/trials/NAME.log): print the "
        "command with its environment (TRIALFORGE_SEED, TRIALFORGE_PARAMS, ...), or run it "
        "with --run and compare its objective with the recorded one (exit 1 if it differs). "
        "On a cluster (-n NAMESPACE): print a Job that runs the Trial again.",
    )
    repro.add_argument("trial", metavar="TRIAL", help="a trial name (or its log file)")
    repro.add_argument("--dir", help="the local run directory")
    repro.add_argument("--run", action="store_true", help="run it here and compare")
    repro.add_argument("--timeout", type=float, help="seconds to let --run take")
    repro.add_argument("--namespace", "-n", help="read the Trial from this namespace")
    repro.add_argument("--kubeconfig", help="default: $KUBECONFIG, ~/.kube/config, in-cluster")
    repro.set_defaults(func=_cmd_reproduce)

    export = sub.add_parser(
        "export",
        help="export an experiment's trials to another tool (mlflow, optuna)",
        description="Export every trial of an experiment to another tool.",
    )
    targets = export.add_subparsers(dest="target", metavar="TARGET", required=True)
    mlflow = targets.add_parser(
        "mlflow",
        help="log every trial as an MLflow run (needs the mlflow extra)",
        description="Log each trial as an MLflow run: params, metric history, final "
        "objectives, lineage tags. Runs already exported are skipped.",
    )
    mlflow.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a trialforge run directory")
    mlflow.add_argument("--tracking-uri", required=True, help="e.g. sqlite:///mlflow.db")
    mlflow.add_argument("--experiment-name", help="MLflow experiment (default: the experiment's)")
    mlflow.add_argument("--artifact-location", help="for a new MLflow experiment")
    _source_options(mlflow)
    mlflow.set_defaults(func=_cmd_export_mlflow)
    _register_optuna(sub, targets)


def _register_optuna(sub: Any, targets: Any) -> None:
    """trialforge dashboard, trialforge export optuna (reporting.optuna_commands)."""
    from trialforge.reporting.optuna_commands import add_dashboard, add_export_optuna

    add_export_optuna(targets)
    add_dashboard(sub)
