"""The ``list``, ``status`` and ``logs`` subcommands (registered by cli.py).

Local by default (run directories under ``runs/``, or ``--dir``); on a cluster
with ``-n NAMESPACE``, ``-A``, ``--kubeconfig`` or ``--cluster``.  The logic is in
reporting.inventory and reporting.trial_logs; this module parses and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

EXIT_OK = 0
EXIT_NOT_FOUND = 1  # no such run directory, experiment or trial; no log to show
EXIT_USAGE = 2  # bad arguments (argparse uses 2 too)
EXIT_CLUSTER = 3  # the cluster cannot be reached or refused the request

EXIT_CODES = """exit codes:
  0  done
  1  not found: no such run directory, Experiment or Trial, or no log to show
  2  bad arguments (e.g. a label selector that does not parse)
  3  the cluster cannot be reached, or refused the request
"""


class ClusterError(Exception):
    """The cluster cannot be reached, or refused: said in one line."""


def _cluster_wanted(args: argparse.Namespace) -> bool:
    return bool(
        getattr(args, "namespace", None)
        or getattr(args, "all_namespaces", False)
        or getattr(args, "kubeconfig", None)
        or getattr(args, "cluster", False)
    )


def _kube(args: argparse.Namespace) -> tuple[Any, str]:
    """A Kube client and the namespace to use (-n, else the context's, else default)."""
    from kubernetes import client, config

    from trialforge.kube.client import Kube

    namespace = args.namespace
    try:
        config.load_kube_config(config_file=args.kubeconfig)
        if namespace is None:
            _, active = config.list_kube_config_contexts(config_file=args.kubeconfig)
            namespace = (active or {}).get("context", {}).get("namespace")
    except (config.ConfigException, OSError, TypeError) as exc:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            raise ClusterError(
                f"no cluster to talk to: {exc} (give --kubeconfig, or set KUBECONFIG)"
            ) from None
    return Kube(client.ApiClient(), component="trialforge-cli"), namespace or "default"


def _cluster_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a cluster read, its failures as ClusterError (the API server's own words)."""
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        try:
            message = json.loads(exc.body).get("message") or exc.reason
        except (ValueError, TypeError, AttributeError):
            message = exc.reason
        if exc.status == 404:
            message = f"{message} (are the Trialforge CRDs installed? kubectl apply -f crds/)"
        raise ClusterError(f"the cluster refused: {exc.status} {message}") from None
    except (HTTPError, OSError) as exc:
        raise ClusterError(f"cannot reach the cluster: {exc}") from None


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(max(0, seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size * 2 or (unit == "m" and s >= size):
            return f"{s // size}{unit}"
    return f"{s}s"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def columns(rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned columns, two spaces apart (as kubectl prints)."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def _dump(doc: Any, output: str) -> None:
    if output == "yaml":
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
    else:
        print(json.dumps(doc, indent=1))


def _output(args: argparse.Namespace) -> str | None:
    return "json" if args.json else args.output


# --- list ------------------------------------------------------------------------------------


def _cmd_list(args: argparse.Namespace) -> int:
    from trialforge.reporting.inventory import (
        NotFound,
        cluster_experiments,
        filter_summaries,
        local_runs,
        parse_selector,
    )

    try:
        if args.selector:
            parse_selector(args.selector)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    phases = [p for text in args.phase or [] for p in text.split(",") if p]
    try:
        if _cluster_wanted(args):
            kube, namespace = _kube(args)
            found = _cluster_call(
                cluster_experiments,
                kube,
                None if args.all_namespaces else namespace,
                args.selector,  # the API server selects
            )
            summaries = filter_summaries(found, None, phases)
        else:
            summaries = filter_summaries(local_runs(Path(args.dir)), args.selector, phases)
    except NotFound as exc:
        return _fail(str(exc), EXIT_NOT_FOUND)
    except ClusterError as exc:
        return _fail(str(exc), EXIT_CLUSTER)
    now = time.time()
    output = _output(args)
    if output:
        _dump({"experiments": [s.to_json(now) for s in summaries]}, output)
        return EXIT_OK
    if not summaries:
        where = "on the cluster" if _cluster_wanted(args) else f"under {args.dir}"
        print(
            f"no experiments {where}" + (" match" if args.selector or phases else ""),
            file=sys.stderr,
        )
        return EXIT_OK
    show_ns = bool(args.all_namespaces)
    head = [
        *(["NAMESPACE"] if show_ns else []),
        "NAME",
        "PHASE",
        "PROGRESS",
        "BEST",
        "AGE",
        "LABELS",
        "DESCRIPTION",
    ]
    rows = [head]
    for s in summaries:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        rows.append(
            [
                *([s.namespace or "-"] if show_ns else []),
                s.name,
                s.shown_phase,
                f"{s.done}/{s.max if s.max is not None else '?'}",
                _fmt(s.best),
                _age(None if s.started is None else now - s.started),
                labels or "-",
                (s.description or "-")[:60],
            ]
        )
    sys.stdout.write(columns(rows))
    return EXIT_OK


# --- status ----------------------------------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    from trialforge.reporting.inventory import NotFound, cluster_detail, find_run_dir, local_detail

    try:
        if _cluster_wanted(args):
            kube, namespace = _kube(args)
            detail = _cluster_call(cluster_detail, kube, namespace, args.name)
        else:
            detail = local_detail(find_run_dir(args.name, Path(args.dir)))
    except NotFound as exc:
        return _fail(str(exc), EXIT_NOT_FOUND)
    except ClusterError as exc:
        return _fail(str(exc), EXIT_CLUSTER)
    except ValueError as exc:  # a run directory of a newer format
        return _fail(str(exc), EXIT_USAGE)
    now = time.time()
    output = _output(args)
    if output:
        _dump(detail.to_json(now), output)
        return EXIT_OK
    sys.stdout.write(render_status(detail, now))
    return EXIT_OK


def render_status(detail: Any, now: float) -> str:
    s = detail.summary
    where = f"namespace {s.namespace}" if s.namespace else f"run directory {s.run_dir}"
    out = [f"experiment {s.name} ({where})"]
    phase = s.shown_phase + (f" ({s.reason})" if s.reason else "")
    out.append(f"  phase:       {phase}" + (f": {detail.message}" if detail.message else ""))
    if s.description:
        out.append(f"  description: {s.description}")
    if s.labels:
        out.append("  labels:      " + ", ".join(f"{k}={v}" for k, v in sorted(s.labels.items())))
    if s.objective:
        out.append(f"  objective:   {s.objective}")
    age = _age(None if s.started is None else now - s.started)
    out.append(
        f"  progress:    {s.done}/{s.max if s.max is not None else '?'} trials done, "
        f"started {age} ago"
    )
    c = detail.counts
    out.append(
        "  trials:      "
        + ", ".join(
            f"{c.get(k, 0)} {k}"
            for k in ("pending", "running", "succeeded", "failed", "pruned", "cancelled", "retried")
        )
    )
    if detail.best:
        b = detail.best
        value = b.get("value", b.get("values"))
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in (b.get("parameters") or {}).items())
        out.append(f"  best:        {b.get('trial')} = {_fmt(value)}  ({params})")
    if detail.conditions:
        out.append("conditions:")
        rows = [["TYPE", "STATUS", "REASON", "MESSAGE"]]
        for cond in detail.conditions:
            rows.append(
                [
                    str(cond.get("type")),
                    str(cond.get("status")),
                    str(cond.get("reason")),
                    str(cond.get("message") or ""),
                ]
            )
        out.extend("  " + line for line in columns(rows).splitlines())
    out.append("what holds trials back:")
    out.extend(f"  - {h}" for h in detail.holds) if detail.holds else out.append("  nothing")
    if detail.trials:
        out.append("trials (latest attempts):")
        rows = [["NAME", "PHASE", "VALUES", "REASON"]]
        for t in detail.trials[-30:]:
            values = ",".join(_fmt(v) for v in t.get("values") or []) or "-"
            rows.append([t["name"], t["phase"], values, t.get("reason") or "-"])
        out.extend("  " + line for line in columns(rows).splitlines())
        if len(detail.trials) > 30:
            out.append(f"  ... and {len(detail.trials) - 30} earlier (--json shows all)")
    return "\n".join(out) + "\n"


# --- logs ------------------------------------------------------------------------------------


def _cmd_logs(args: argparse.Namespace) -> int:
    from trialforge.reporting.inventory import NotFound
    from trialforge.reporting.trial_logs import cluster_lines, find_local, local_lines

    if args.tail is not None and args.tail < 0:
        return _fail("--tail must be 0 or more", EXIT_USAGE)
    try:
        if _cluster_wanted(args):
            kube, namespace = _kube(args)
            source, lines = _cluster_call(
                cluster_lines, kube, namespace, args.trial, args.follow, args.tail
            )
            if source.kept:
                print(
                    f"# {args.trial}: no pod log to read; the last lines kept in {source.where}",
                    file=sys.stderr,
                )
        else:
            directory, log = find_local(args.trial, args.run_dir, Path(args.dir))
            if not log.exists() and not args.follow:
                return _fail(f"trial {args.trial} has no log yet ({log})", EXIT_NOT_FOUND)
            lines = local_lines(directory, log, args.follow, args.tail)
        for line in lines:
            sys.stdout.write(line)
            sys.stdout.flush()
    except NotFound as exc:
        return _fail(str(exc), EXIT_NOT_FOUND)
    except ClusterError as exc:
        return _fail(str(exc), EXIT_CLUSTER)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # | head
        return EXIT_OK
    return EXIT_OK


# --- the parsers -----------------------------------------------------------------------------


def _cluster_options(parser: argparse.ArgumentParser, all_namespaces: bool = False) -> None:
    group = parser.add_argument_group("on a cluster (any of these reads the cluster)")
    group.add_argument("--namespace", "-n", help="the namespace (default: the context's)")
    if all_namespaces:
        group.add_argument("--all-namespaces", "-A", action="store_true", help="every namespace")
    group.add_argument("--kubeconfig", help="default: $KUBECONFIG, ~/.kube/config, in-cluster")
    group.add_argument(
        "--cluster",
        action="store_true",
        help="the cluster, in the default namespace of the kubeconfig's context",
    )


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print only JSON on stdout")
    parser.add_argument("--output", "-o", choices=["json", "yaml"], help="print the document")


def register(sub: Any) -> None:
    """Add list, status and logs to cli.py's subparsers."""
    lst = sub.add_parser(
        "list",
        help="list experiments: local run directories, or Experiments on a cluster",
        description="List experiments with their phase, progress (trials done / planned), "
        "best objective value, age, labels and description. Locally: every run directory "
        "under --dir (default runs/); a run whose process died shows as 'Running (stale)'. "
        "With -n/-A: the Experiments on the cluster. Labels are metadata.labels and the "
        "description the annotation trialforge.io/description, in the YAML as on a cluster.",
        epilog="examples:\n  trialforge list\n  trialforge list -l team=vision --phase Running\n"
        "  trialforge list -A -o yaml\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lst.add_argument("--dir", default="runs", help="folder of run directories (default: runs)")
    lst.add_argument("--selector", "-l", help="label selector, e.g. team=vision,env!=prod,gpu")
    lst.add_argument(
        "--phase",
        action="append",
        metavar="PHASE",
        help="only these phases (repeatable, or comma-separated)",
    )
    _output_options(lst)
    _cluster_options(lst, all_namespaces=True)
    lst.set_defaults(func=_cmd_list)

    status = sub.add_parser(
        "status",
        help="one experiment: phase, conditions, counts, best trial, what holds trials back",
        description="Show one experiment: its phase and conditions, trial counts, the best "
        "trial, and what holds trials back (suspension, parallelism, Kueue admission, "
        "unschedulable pods, image pulls, a dead local process). NAME is a run directory, or "
        "an experiment's name under --dir; with -n, an Experiment on the cluster.",
        epilog="examples:\n  trialforge status digits-tpe-asha\n  trialforge status runs/x --json\n"
        "  trialforge status mnist -n research\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("name", metavar="NAME", help="experiment name or run directory")
    status.add_argument("--dir", default="runs", help="folder of run directories (default: runs)")
    _output_options(status)
    _cluster_options(status)
    status.set_defaults(func=_cmd_status)

    logs = sub.add_parser(
        "logs",
        help="print a trial's output (-f: follow it while it runs)",
        description="Print a trial's output. Locally: RUN_DIR/trials/TRIAL.log, found in "
        "--run-dir or in whichever run directory under --dir holds the trial (TRIAL may "
        "also be the log's path). On a cluster (-n): the trainer container's log of the "
        "trial's pod (worker 0); once the pod is gone (a pruned, cancelled or failed trial), "
        "the last lines the operator kept in the Trial's status. -f follows the output "
        "until the trial ends.",
        epilog="examples:\n  trialforge logs digits-tpe-asha-3 -f\n"
        "  trialforge logs mnist-7 -n research --tail 20\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    logs.add_argument("trial", metavar="TRIAL", help="the trial's name (or its log file)")
    logs.add_argument("--follow", "-f", action="store_true", help="follow until the trial ends")
    logs.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    logs.add_argument("--run-dir", help="the trial's run directory")
    logs.add_argument("--dir", default="runs", help="folder of run directories (default: runs)")
    _cluster_options(logs)
    logs.set_defaults(func=_cmd_logs)
