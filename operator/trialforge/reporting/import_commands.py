"""The ``import`` subcommand (registered by cli.py): other tools' experiments as ours."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

EXIT_CODES = """exit codes:
  0  converted (notes on stderr say what changed or was left out, each naming its field)
  1  --strict, and something was left out
  2  cannot be converted (each reason names its field), or the file cannot be read
"""


def _cmd_import_katib(args: argparse.Namespace) -> int:
    from trialforge.reporting.katib_import import KatibImportError, convert_all

    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        docs = list(yaml.safe_load_all(text))
    except OSError as exc:
        print(f"error: {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except yaml.YAMLError as exc:
        print(f"error: {args.file}: not YAML: {exc}", file=sys.stderr)
        return 2
    try:
        conversions = convert_all(docs)
    except KatibImportError as exc:
        print(f"error: {args.file}: cannot be converted:", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return 2
    for conversion in conversions:
        name = conversion.document["metadata"]["name"]
        for note in conversion.notes:
            tag = "not converted" if note.dropped else "changed"
            print(f"{name}: {tag}: {note}", file=sys.stderr)
    if args.json:
        out = json.dumps(
            [
                {
                    "experiment": c.document,
                    "notes": [
                        {"field": n.field, "message": n.message, "dropped": n.dropped}
                        for n in c.notes
                    ],
                }
                for c in conversions
            ],
            indent=1,
        )
        text = out + "\n"
    else:
        text = yaml.safe_dump_all([c.document for c in conversions], sort_keys=False)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.strict and any(c.dropped for c in conversions):
        return 1
    return 0


def register(sub: Any) -> None:
    """Add ``import`` (with its source ``katib``) to cli.py's subparsers."""
    imp = sub.add_parser(
        "import",
        help="convert another tool's experiment into a Trialforge Experiment (katib)",
        description="Convert another tool's experiment definition into a Trialforge "
        "Experiment YAML.",
    )
    sources = imp.add_subparsers(dest="source", metavar="SOURCE", required=True)
    katib = sources.add_parser(
        "katib",
        help="a Katib kubeflow.org/v1beta1 Experiment",
        description="Convert a Katib kubeflow.org/v1beta1 Experiment: objective (and "
        "metricStrategies), algorithm and settings, early stopping (medianstop), parameters "
        "(double, int, categorical, discrete; feasibleSpace min/max/step/list), the "
        "trialTemplate (a batch Job, or a Kubeflow training-operator job such as a "
        "PyTorchJob, as a Job with the same pod template and workers count; "
        "${trialParameters.X} become ${params.NAME}), the metrics collector (StdOut, File, "
        "TensorFlowEvent, Push) and the counts. The result is validated. What changes or "
        "cannot be converted is listed on stderr, each with its field.",
        epilog="examples:\n  trialforge import katib katib-experiment.yaml > experiment.yaml\n"
        "  trialforge import katib katib.yaml -o xp.yaml && trialforge run xp.yaml\n\n"
        + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    katib.add_argument("file", metavar="FILE", help="the Katib Experiment YAML (- for stdin)")
    katib.add_argument("--output", "-o", help="write the Trialforge YAML here (default: stdout)")
    katib.add_argument(
        "--json", action="store_true", help="print JSON: each experiment with its notes"
    )
    katib.add_argument(
        "--strict", action="store_true", help="exit 1 if anything could not be converted"
    )
    katib.set_defaults(func=_cmd_import_katib)
