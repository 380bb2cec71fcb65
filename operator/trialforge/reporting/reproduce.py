"""``trialforge reproduce``: the exact command (or Job) that runs a trial again.

A trial is reproduced by its command with its parameters filled in and the
environment every trial gets (``TRIALFORGE_SEED``, ``TRIALFORGE_PARAMS``, ...),
run in the same folder.  Locally that is a shell line (or, with ``--run``, the
run itself, whose objective is compared with the recorded one); on a cluster
it is a Job built from the Trial exactly as the operator builds it, without
the metrics sidecar and the owner, for ``kubectl create -f -``.
"""

from __future__ import annotations

import copy
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trialforge.engine.objective import conclude
from trialforge.engine.record import TrialRecord
from trialforge.engine.template import placeholder_values, substitute_container, trial_environment
from trialforge.metrics.parsers import ObservationReader, make_parser
from trialforge.reporting.rundata import RunData


@dataclass(frozen=True)
class Reproduction:
    argv: list[str]
    env: dict[str, str]  # what a trial gets on top of the caller's environment
    cwd: Path | None

    def shell(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        command = " ".join(shlex.quote(a) for a in self.argv)
        line = f"env {env} {command}"
        return f"cd {shlex.quote(str(self.cwd))} && {line}" if self.cwd else line


def reproduction(data: RunData, record: TrialRecord) -> Reproduction:
    containers = data.spec.trial.template["spec"]["containers"]
    container = substitute_container(
        containers[0], placeholder_values(data.spec, record.parameters)
    )
    argv = record.command or [
        str(a) for a in (container.get("command") or []) + (container.get("args") or [])
    ]
    env = {
        str(item["name"]): str(item["value"])
        for item in container.get("env") or []
        if isinstance(item, dict) and "value" in item
    }
    env.update(
        trial_environment(data.name, record.name, record.parameters, record.seed, record.attempt)
    )
    return Reproduction(list(argv), env, data.workdir)


@dataclass(frozen=True)
class Rerun:
    exit_code: int
    values: tuple[float, ...] | None
    recorded: tuple[float, ...] | None
    output: str

    @property
    def same(self) -> bool:
        return self.values is not None and self.values == self.recorded


def rerun(data: RunData, record: TrialRecord, timeout: float | None = None) -> Rerun:
    """Run the trial again here and read its objective the way the trial's was read."""
    repro = reproduction(data, record)
    env = dict(os.environ)
    # `python` means the interpreter running Trialforge, as in trialforge run.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(repro.env)
    done = subprocess.run(
        repro.argv,
        cwd=repro.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    metrics = data.spec.trial.metrics
    fmt = "json" if metrics.source == "push" else metrics.format
    reader = ObservationReader(make_parser(fmt, metrics.pattern))
    observations = reader.feed(done.stdout) + reader.flush()
    outcome = conclude(data.spec, done.returncode, observations)
    recorded = tuple(record.values) if record.values else None
    return Rerun(done.returncode, outcome.values, recorded, done.stdout + done.stderr)


def cluster_job(data: RunData, trial: dict[str, Any]) -> dict[str, Any]:
    """A Job that runs ``trial`` again: the operator's Job, standing on its own."""
    from trialforge.kube.jobs import build_job

    job, _service = build_job(data.experiment, trial)
    job = copy.deepcopy(job)
    meta = job["metadata"]
    meta["name"] = f"{trial['metadata']['name']}-repro"[:63]
    meta.pop("ownerReferences", None)
    meta.setdefault("annotations", {})["trialforge.io/reproduces"] = trial["metadata"]["name"]
    # The operator would manage this Job if it carried the experiment's labels.
    meta["labels"] = {"trialforge.io/reproduces": trial["metadata"]["name"]}
    template_meta = job["spec"]["template"].setdefault("metadata", {})
    template_meta["labels"] = {"trialforge.io/reproduces": trial["metadata"]["name"]}
    job["spec"].pop("selector", None)
    job["spec"].pop("suspend", None)
    job["spec"]["template"]["spec"].pop("subdomain", None)
    return job


def job_yaml(job: dict[str, Any]) -> str:
    return yaml.safe_dump(job, sort_keys=False)
