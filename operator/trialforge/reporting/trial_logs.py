"""What ``trialforge logs TRIAL [-f]`` prints: a trial's output, local or on a cluster.

Locally the output is the run directory's ``trials/NAME.log``; following it
stops once the attempt's record is terminal, or the process that runs it is
gone.  On a cluster it is the trainer container's log of the trial's pod
(worker 0), followed while it runs; once the pod is gone (a pruned, cancelled
or failed trial's Job is deleted) it is the bounded tail the operator kept in
the Trial's ``status.logTail``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trialforge.api.status import TERMINAL_PHASES
from trialforge.local.rundir import RunDirectory
from trialforge.reporting.inventory import NotFound, is_run_dir, local_runs, run_is_live

POLL_SECONDS = 0.25


@dataclass
class LogSource:
    """Where a trial's log was found, said to a person on stderr."""

    trial: str
    where: str  # "RUN_DIR/trials/NAME.log", "pod NS/POD", "status.logTail of NS/NAME"
    kept: bool = False  # True: only the last lines the operator kept


# --- local ------------------------------------------------------------------------------


def find_local(trial: str, run_dir: str | None, root: Path) -> tuple[RunDirectory, Path]:
    """The run directory and log file of ``trial``: TRIAL as a log file's path, in
    ``run_dir``, or in whichever run directory under ``root`` holds it."""
    path = Path(trial)
    if path.suffix == ".log" and path.parent.name == "trials" and path.exists():
        return RunDirectory(path.parent.parent), path
    if run_dir is not None:
        if not is_run_dir(Path(run_dir)):
            raise NotFound(f"{run_dir} is not a run directory (no experiment.yaml)")
        candidates = [Path(run_dir)]
    else:
        if not root.exists():
            raise NotFound(f"no trial {trial!r}: {root} does not exist (give --dir RUN_DIR)")
        candidates = [Path(s.run_dir) for s in local_runs(root) if s.run_dir]
    for folder in candidates:
        directory = RunDirectory(folder)
        log = directory.log_path(trial)
        if log.exists() or any(r.name == trial for r in directory.load_trials()):
            return directory, log
    looked = ", ".join(str(c) for c in candidates[:5]) or str(root)
    raise NotFound(f"no trial {trial!r} in {looked}")


def _attempt_open(directory: RunDirectory, trial: str) -> bool:
    """Whether the attempt may still write: not terminal, and its run's process lives."""
    record = next((r for r in directory.load_trials() if r.name == trial), None)
    if record is not None and record.phase in TERMINAL_PHASES:
        return False
    return run_is_live(directory.load_state()) is True


def local_lines(
    directory: RunDirectory,
    log: Path,
    follow: bool,
    tail: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """The log's lines (the last ``tail``), then with ``follow`` what is appended until
    the attempt has ended."""
    trial = log.stem
    offset = 0
    if log.exists():
        data = log.read_bytes()
        offset = len(data)
        lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
        yield from lines[-tail:] if tail is not None else lines
    if not follow:
        return
    pending = b""
    while True:
        open_before = _attempt_open(directory, trial)
        if log.exists():
            with open(log, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            offset += len(chunk)
            pending += chunk
            *whole, pending = pending.split(b"\n")
            for line in whole:
                yield line.decode("utf-8", errors="replace") + "\n"
        if not open_before:  # ended before this read: everything it wrote is read
            if pending:
                yield pending.decode("utf-8", errors="replace")
            return
        sleep(POLL_SECONDS)


# --- a cluster ------------------------------------------------------------------------------


def cluster_lines(
    kube: Any, namespace: str, trial: str, follow: bool, tail: int | None = None
) -> tuple[LogSource, Iterator[str]]:
    """The trial's pod log (followed while it runs), or its kept tail once the pod is gone.

    NotFound when there is no such Trial, or neither a readable pod nor kept lines.
    """
    from kubernetes.client.rest import ApiException

    from trialforge.kube.logtail import trainer_name
    from trialforge.kube.observe import _main_pod as main_pod

    obj = kube.get_trial(namespace, trial)
    if obj is None:
        raise NotFound(f"no Trial {namespace}/{trial}")
    status = obj.get("status") or {}
    kept = list(status.get("logTail") or [])
    pod = main_pod(kube.list_trial_pods(namespace, trial))
    problem = "its pod is gone"
    if pod is not None:
        experiment = kube.get_experiment(namespace, obj["spec"]["experiment"])
        template = ((experiment or {}).get("spec") or {}).get("trial", {}).get("template", {})
        container = trainer_name(template)
        pname = pod["metadata"]["name"]
        try:
            if follow:
                resp = kube.pod_log(namespace, pname, container, tail_lines=tail, follow=True)
                return LogSource(trial, f"pod {namespace}/{pname}"), _stream(resp)
            text = kube.pod_log(namespace, pname, container, tail_lines=tail)
            return LogSource(trial, f"pod {namespace}/{pname}"), iter(
                text.splitlines(keepends=True)
            )
        except ApiException as exc:
            problem = f"the log of pod {pname} cannot be read ({_reason(exc)})"
    if kept:
        lines = [f"{line}\n" for line in (kept[-tail:] if tail is not None else kept)]
        return LogSource(trial, f"status.logTail of Trial {namespace}/{trial}", kept=True), iter(
            lines
        )
    phase = status.get("phase", "Pending")
    raise NotFound(
        f"no log for Trial {namespace}/{trial} ({phase}): {problem}, and its status keeps "
        "no last lines (the operator keeps them when a trial ends)"
    )


def _reason(exc: Any) -> str:
    import json

    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (ValueError, TypeError, AttributeError):
        return str(exc.reason or exc.status)


def _stream(resp: Any) -> Iterator[str]:
    pending = b""
    try:
        for chunk in resp.stream(4096, decode_content=True):
            pending += chunk
            *whole, pending = pending.split(b"\n")
            for line in whole:
                yield line.decode("utf-8", errors="replace") + "\n"
        if pending:
            yield pending.decode("utf-8", errors="replace")
    finally:
        resp.release_conn()
