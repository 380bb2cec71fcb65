"""The embedded runtime: an experiment's trials as processes on this machine.

A thin adapter over the engine, like the Kubernetes one: it observes its trials
(records and processes), asks the planner what to do, and does it.  It decides
nothing itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import queue
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trialforge.api.experiment import Experiment
from trialforge.api.observation import Observation
from trialforge.api.status import ACTIVE_PHASES, TERMINAL_PHASES
from trialforge.api.trial import trial_name
from trialforge.engine.changes import changed_fields, refused_changes
from trialforge.engine.disruption import (
    Disruption,
    disrupted,
    last_checkpoint,
    local_disruption,
)
from trialforge.engine.errors import EngineError
from trialforge.engine.history import by_step, continued, merge_metric, rules
from trialforge.engine.objective import conclude
from trialforge.engine.planner import (
    FinishExperiment,
    Plan,
    Planner,
    StartTrial,
    StopTrial,
)
from trialforge.engine.record import TrialRecord, timestamp
from trialforge.engine.status import experiment_status, outcome_status, stop_status
from trialforge.engine.template import placeholder_values, substitute_text, trial_environment
from trialforge.engine.warm import WarmStart, warm_trials
from trialforge.local.process import TrialProcess
from trialforge.local.rundir import RunDirectory, state_of
from trialforge.metrics.contract import CHECKPOINT_METRIC, ENV_CHECKPOINT_DIR
from trialforge.metrics.parsers import ObservationReader, make_parser

# Seconds a trial's start waits to be written (see LocalRunner.__init__).
START_RECORD_DELAY = 1.0


log = logging.getLogger(__name__)


class LocalRunError(RuntimeError):
    """The experiment cannot run locally as written (not a trial's failure)."""


@dataclass
class RunResult:
    phase: str
    reason: str
    message: str
    plan: Plan | None
    records: list[TrialRecord] = field(default_factory=list)
    interrupted: bool = False


def local_command(experiment: Experiment) -> list[str]:
    """The first container's command + args: what a local trial runs."""
    metrics = experiment.spec.trial.metrics
    if metrics.source in ("file", "tensorboard"):
        raise LocalRunError(
            f"spec.trial.metrics.source: {metrics.source} is read by the collector sidecar on a "
            "cluster; trialforge run reads the trainer's stdout (or trialforge.report() pushes)"
        )
    containers = experiment.spec.trial.template.get("spec", {}).get("containers", [])
    container = containers[0] if containers else {}
    argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
    if not argv:
        raise LocalRunError(
            "spec.trial.template.spec.containers[0].command: trialforge run needs a command "
            "to run each trial locally (an image's entrypoint cannot be read without Docker)"
        )
    return argv


class LocalRunner:
    def __init__(
        self,
        experiment: Experiment,
        run_dir: Path,
        workdir: Path,
        on_update: Callable[[LocalRunner, Plan], None] | None = None,
        stop_grace: float = 5.0,
    ) -> None:
        self.experiment = experiment
        self.spec = experiment.spec
        self.name = experiment.name
        self.dir = RunDirectory(run_dir)
        self.workdir = workdir
        self.on_update = on_update
        self.stop_grace = stop_grace
        # What each trial runs, with ${params.x} filled in per trial (as
        # engine.template.substitute_container fills a pod's container): only
        # the command, args and env values, read from the template once.
        # A LocalRunError here, before anything starts, if it cannot run locally.
        self._argv = local_command(experiment)
        container = self.spec.trial.template["spec"]["containers"][0]
        self._env = [
            (str(item["name"]), item["value"])
            for item in container.get("env") or []
            if isinstance(item, dict) and "value" in item
        ]
        metrics = self.spec.trial.metrics
        # Locally, trialforge.report() writes JSON lines to stdout, so push reads as json.
        # A parser keeps no state (a trial's ObservationReader does).
        self._parser = make_parser(
            "json" if metrics.source == "push" else metrics.format, metrics.pattern
        )
        self.planner = Planner(self.spec, self.name)
        self.records: dict[str, TrialRecord] = {}
        self.processes: dict[str, TrialProcess] = {}
        self.observations: dict[str, list[Any]] = {}
        self.wakeup: queue.Queue[tuple[str, str]] = queue.Queue()
        # Trial records are written in the background, so that starting the
        # next trial never waits for the disk, and a trial's start is written
        # START_RECORD_DELAY late, so that a shorter trial is written once, at
        # its end.  A crash can lose the last few changes (a power cut, the
        # last seconds of them: records are not fsynced, see local.rundir): a
        # trial that ended is then still recorded as running, one that started
        # has no record yet (or an unreadable one); a resume runs both again
        # (from the start: their log and observations begin afresh), as it
        # does any trial that was running when the crash came.
        self.writer = self.dir.writer()
        # What changed this round, written once the round's trials have
        # started: the next trial's start never waits behind the bookkeeping
        # of the one that ended (see _persist).
        self._unsaved: dict[str, TrialRecord] = {}
        self._unwritten_events: list[tuple[str, str]] = []
        self._metric = self.spec.all_objectives[0].metric
        self._history_rules = rules(self.spec)
        # name -> (the objective's history, how many observations are merged into it)
        self._histories: dict[str, tuple[Sequence[dict[str, Any]], int]] = {}
        # The planner's views of the records, in the records' order: an ended
        # trial's view no longer changes, so it is built once; only those of
        # the trials still open (by position) are built again each round.
        self._view_list: list[TrialRecord | None] = []
        self._open_views: dict[str, int] = {}
        # name -> position of the views the planner has not settled, in order.
        self._unsettled: dict[str, int] = {}
        # Records that wait for a process (a resume's), started by _collect.
        self._to_launch: list[TrialRecord] = []
        # The observations of a trial's earlier runs, which a disruption ended:
        # its history continues with the next run's (engine.disruption).
        self._earlier: dict[str, list[Observation]] = {}
        self.started_at: float | None = None
        self._conditions: list[dict[str, Any]] = []  # as the last state.json had them
        self.resumed = False
        self.node = socket.gethostname()
        # Built once: copying os.environ for every trial is on the path to its start.
        self._base_env = dict(os.environ)
        # `python` in a command means the interpreter running Trialforge, so the
        # trainer sees the same installed packages.
        self._base_env["PATH"] = os.pathsep.join(
            [str(Path(sys.executable).parent), self._base_env.get("PATH", "")]
        )
        self._base_env["PYTHONUNBUFFERED"] = "1"
        self.gpu_type = _local_gpu()
        self._interrupting = False

    # -- setup ----------------------------------------------------------------------

    def _prepare(self) -> None:
        doc = self.experiment.model_dump(by_alias=True, exclude_none=True, mode="json")
        doc.pop("status", None)
        if self.dir.exists():
            self._resume(doc)
        else:
            self.dir.create(doc)
        if self.started_at is None:
            self.started_at = time.time()
        if self.spec.warm_start is not None:
            self.planner = Planner(self.spec, self.name, self._warm_start(self.started_at))
        self._save_state()

    def _warm_start(self, started_at: float) -> WarmStart:
        """spec.warmStart.runDir's finished trials (relative to the experiment's folder)."""
        warm = self.spec.warm_start
        assert warm is not None
        if warm.run_dir is None:
            raise LocalRunError(
                "spec.warmStart.experiment names a cluster Experiment; locally, warm-start "
                "from an earlier run with spec.warmStart.runDir"
            )
        source = RunDirectory(self.workdir / warm.run_dir)
        recorded = source.recorded_spec() if source.exists() else None
        if recorded is None:
            raise LocalRunError(
                f"spec.warmStart.runDir: no run directory at {source.root} (a folder "
                "`trialforge run` wrote, with experiment.yaml and state.json)"
            )
        try:
            earlier = Experiment.model_validate(
                {k: v for k, v in recorded.items() if k != "status"}
            ).spec
        except ValueError as exc:
            raise LocalRunError(
                f"spec.warmStart.runDir: {source.root}/experiment.yaml is no Experiment ({exc})"
            ) from None
        records = source.load_trials()
        # The last value of each metric, for constraints the earlier run lacked.
        last_values: dict[str, dict[str, float]] = {}
        if self.spec.constraints:
            for record in records:
                last = last_values.setdefault(record.name, {})
                for observation in source.load_observations(record.name):
                    last.update(observation.metrics)
        # Whole seconds, as state.json keeps the start: a resume tells the same trials.
        result = warm_trials(
            self.spec, earlier, records, source=f"runDir {warm.run_dir}",
            before=float(int(started_at)), last_values=last_values,
        )  # fmt: skip
        for warning in result.warnings:
            log.warning("%s", warning)
            self._event("WarmStart", warning)
        self._event("WarmStart", f"told the sampler {result.summary}")
        return result

    def _resume(self, doc: dict[str, Any]) -> None:
        """Take up a run recorded here: its trials, under the spec-change policy."""
        recorded = self.dir.recorded_spec() or {}
        try:
            before = Experiment.model_validate(
                {k: v for k, v in recorded.items() if k != "status"}
            ).spec
        except ValueError as exc:
            raise LocalRunError(
                f"{self.dir.root}/experiment.yaml cannot be read as an Experiment ({exc}); "
                "use another --dir, or delete the directory to start over"
            ) from None
        refused = refused_changes(before, self.spec)
        if refused:
            raise LocalRunError(
                f"{self.dir.root} holds a run of this experiment with another design: "
                + "; ".join(refused)
                + " (use another --dir, or delete the directory to start over)"
            )
        changed = changed_fields(before, self.spec)
        if changed:
            # The same changes a cluster Experiment takes: a raised budget runs
            # only the new trials, a new template applies to new trials.
            self.dir.create(doc)
            self.dir.event("SpecChanged", f"the spec changed: {', '.join(changed)}")
        self.resumed = True
        try:
            state = self.dir.load_state()
        except ValueError as exc:
            raise LocalRunError(str(exc)) from None
        self.dir.upgrade()  # a journal of format 1 becomes camelCase before it grows
        self.started_at = timestamp(state.get("startTime"))
        self._conditions = list(state.get("conditions") or [])
        for record in self.dir.load_trials():
            if record.phase == "Pending" and record.reason == "Interrupted":
                # Disrupted by the runner's own stop, its observations recorded:
                # it runs again and its history goes on (engine.disruption).
                self._add(record)
                self._to_launch.append(record)
                self._earlier[record.name] = self.dir.load_observations(record.name)
                self.observations[record.name] = list(self._earlier[record.name])
                continue
            if record.phase in ACTIVE_PHASES:
                # Its process died with the previous run: run the same attempt again.
                record = dataclasses.replace(record, phase="Pending", reason="Resumed")
                self.dir.discard_output(record.name)
                self.dir.save_trial(record)
            self._add(record)
            if record.phase == "Pending":
                self._to_launch.append(record)
            self.observations[record.name] = self.dir.load_observations(record.name)
        self.dir.event("Resumed", f"resuming with {len(self.records)} recorded trials")

    def _save_state(self, plan: Plan | None = None, interrupted: bool = False) -> None:
        """Write state.json: the experiment's status as engine.status builds it (the same
        fields a cluster Experiment's status has) and the run directory's own fields."""
        assert self.started_at is not None
        # Interrupted, the run is suspended until it is run again.
        spec = self.spec.model_copy(update={"suspend": True}) if interrupted else self.spec
        status = experiment_status(
            spec,
            plan,
            started_at=self.started_at,
            conditions=self._conditions,
            now=time.time(),
        ).to_wire()
        if interrupted:
            status.update(reason="Interrupted", message="stopped by the user; run again to resume")
        self._conditions = status.get("conditions") or []
        # While it runs, state.json names this process (trialforge list, logs -f).
        running = not interrupted and status.get("phase") not in ("Succeeded", "Failed")
        self.dir.save_state(
            state_of(
                status,
                self.name,
                self.workdir,
                pid=os.getpid() if running else None,
                host=self.node if running else None,
            )
        )

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> RunResult:
        self._prepare()
        plan: Plan | None = None
        try:
            while True:
                self._collect()
                plan = self.planner.plan(
                    self._views(), now=time.time(), started_at=self.started_at, settled_omitted=True
                )
                finished = self._act(plan)
                self._persist()
                if self.on_update:
                    self.on_update(self, plan)
                # Done when no process is left to collect: one that ended after
                # _collect looked is concluded (and recorded) next round.
                if finished is not None and not self.processes:
                    self.writer.close()
                    self._save_state(plan)
                    self.dir.event(finished.reason, finished.message)
                    return RunResult(
                        finished.phase,
                        finished.reason,
                        finished.message,
                        plan,
                        self.sorted_records(),
                    )
                self._wait()
        except KeyboardInterrupt:
            self._stop_all("Interrupted")
            self._interrupted()
            self._persist()
            self.writer.close()
            self._save_state(plan, interrupted=True)
            self.dir.event("Interrupted", "stopped by the user")
            return RunResult(
                "Interrupted",
                "Interrupted",
                "stopped by the user",
                plan,
                self.sorted_records(),
                True,
            )
        except EngineError as exc:
            # The search cannot go on (a setting Optuna refuses only once it samples):
            # the running trials stop, what was recorded stays, and the user is told.
            self._stop_all("CannotPlan")
            self._persist()
            self.writer.close()
            self.dir.event("CannotPlan", str(exc))
            raise
        except BaseException:
            # Whatever stopped the run, what it recorded reaches the disk.
            with contextlib.suppress(Exception):
                self._persist()
                self.writer.close()
            raise

    def sorted_records(self) -> list[TrialRecord]:
        return sorted(self.records.values(), key=lambda r: (r.index, r.attempt))

    def recent_records(self, n: int) -> list[TrialRecord]:
        """The trials a person watches: those running and the ``n`` started last.

        Its cost follows ``n`` and the trials running, not all trials (records
        are kept in the order they were made).
        """
        chosen = {r.name: r for r in itertools.islice(reversed(self.records.values()), n)}
        for name in self.processes:
            chosen.setdefault(name, self.records[name])
        return list(chosen.values())

    def _wait(self) -> None:
        timeout = 0.5
        limit = self.spec.trial.timeout_seconds
        for name, process in self.processes.items():
            process.enforce()
            if process.done:
                continue
            if limit is not None and process.started_at is not None and not process.stopping:
                left = process.started_at + limit - time.time()
                if left <= 0:
                    process.stop("Timeout", self.stop_grace)
                    self._event("TrialTimeout", f"{name} ran past {self.spec.trial.timeout}")
                else:
                    timeout = min(timeout, left)
            kill_in = process.kill_in()
            if kill_in is not None:
                # Wake for the SIGKILL of a process that ignores SIGTERM.
                timeout = min(timeout, max(kill_in, 0.01))
        try:
            self.wakeup.get(timeout=timeout)
            # Drain what else arrived, so one plan covers a burst of events.
            while True:
                self.wakeup.get_nowait()
        except queue.Empty:
            pass

    def _wakes(self, observation: Observation) -> bool:
        """Whether a running trial's observation should wake the loop for a plan.

        Only when the planner acts on it while the trial runs (a pruner, a
        non-finite objective); otherwise it counts once the trial ends, or at
        the next wake-up (at most half a second away), as the kube adapter
        coalesces its reconciles after the ingest stores observations.  Asked
        on the thread that reads the trial's output.
        """
        metric = self._metric
        values = (observation.metrics[metric],) if metric in observation.metrics else ()
        return self.planner.reacts_to(values)

    def _add(self, record: TrialRecord) -> None:
        self.records[record.name] = record
        self._open_views[record.name] = len(self._view_list)
        self._view_list.append(None)
        self._unsettled[record.name] = len(self._view_list) - 1

    def _views(self) -> list[TrialRecord]:
        """The planner's views of the trials it has not settled (those it settled do
        not change here: it is told so), so a round costs what is in play."""
        views = self._view_list
        planner = self.planner
        for name in [n for n in self._unsettled if planner.settled(n)]:
            del self._unsettled[name]
        for name, position in list(self._open_views.items()):
            record = self.records[name]
            obs = self.observations.get(name)
            views[position] = (
                dataclasses.replace(record, intermediate=self._intermediate(name, obs))
                if obs
                else record
            )
            if record.phase in TERMINAL_PHASES:
                del self._open_views[name]
                self._histories.pop(name, None)
        return [views[p] for p in self._unsettled.values()]  # type: ignore[misc]

    def _intermediate(self, name: str, observations: list[Observation]) -> dict[int, float]:
        """The objective's series as the pruner hears it: the bounded history a
        cluster's ingest keeps (engine.history), merged with each round's new
        observations as the ingest merges each batch."""
        points, merged = self._histories.get(name, ((), 0))
        if len(observations) > merged:
            directions, tails = self._history_rules
            points = merge_metric(points, observations[merged:], self._metric, directions, tails)
            self._histories[name] = (points, len(observations))
        return by_step(points)

    def _collect(self) -> None:
        """Bring records in line with processes: observations in, ended processes concluded."""
        for name, process in list(self.processes.items()):
            self.observations[name] = self._earlier.get(name, []) + process.snapshot()
            record = self.records[name]
            if not process.done or record.phase in TERMINAL_PHASES:
                continue
            disruption = local_disruption(
                process.exit_code, process.stop_reason, name, record.disruptions
            )
            if disruption is not None and process.stop_reason is None:
                self._disrupted(record, process, disruption)
                del self.processes[name]
                continue
            ended = dataclasses.replace(
                record,
                checkpoint_step=last_checkpoint(self.observations[name], CHECKPOINT_METRIC)
                or record.checkpoint_step,
                exit_code=process.exit_code,
                completion_time=time.time(),
                junk_lines=process.reader.junk,
                artifact_uri=process.artifact_uri or record.artifact_uri,
            )
            if process.stop_reason in ("Pruned", "Cancelled", "Failed"):
                # Stopped by the planner, which set the record's reason when it did.
                ended = dataclasses.replace(ended, phase=process.stop_reason)
            else:
                outcome = conclude(
                    self.spec,
                    process.exit_code,
                    self._observed(name, record),
                    failure="Timeout" if process.stop_reason == "Timeout" else None,
                )
                ended = ended.with_status(outcome_status(outcome))
            self._save(ended)
            self._event(f"Trial{ended.phase}", f"{name}: {ended.message or ended.phase}")
            del self.processes[name]
        # Records that should be running but have no process (a resume) start now.
        to_launch, self._to_launch = self._to_launch, []
        for record in to_launch:
            if record.phase == "Pending" and record.name not in self.processes:
                self._launch(record)

    def _observed(self, name: str, record: TrialRecord) -> list[Observation]:
        """A trial's observations over its runs: one per step once it was disrupted."""
        observations = self.observations.get(name) or []
        return continued(observations) if record.disruptions else observations

    def _disrupted(
        self, record: TrialRecord, process: TrialProcess, disruption: Disruption
    ) -> TrialRecord:
        """A run that a disruption ended: the trial runs again (or fails past its limit)."""
        name = record.name
        now = time.time()
        status = disrupted(self.spec, record.disruption_status(), disruption, now)
        updated = record.with_status(status)
        updated = dataclasses.replace(
            updated,
            exit_code=process.exit_code,
            junk_lines=record.junk_lines + process.reader.junk,
            artifact_uri=process.artifact_uri or record.artifact_uri,
        )
        self._earlier[name] = self._observed(name, updated)
        checkpoint = last_checkpoint(self._earlier[name], CHECKPOINT_METRIC)
        if checkpoint is not None:
            updated = dataclasses.replace(updated, checkpoint_step=checkpoint)
        self.observations[name] = list(self._earlier[name])
        self._histories.pop(name, None)
        # With its observations so far, so that a resume continues its history.
        self.records[name] = updated
        self._unsaved.pop(name, None)
        self.writer.save(updated, observations=self._earlier[name])
        message = updated.message or disruption.message
        self._event("TrialDisrupted", f"{name}: {disruption.reason}: {message}")
        if updated.phase == "Pending" and not self._interrupting:
            self._to_launch.append(updated)
        return updated

    def _interrupted(self) -> None:
        """The runner's own stop (Ctrl-C) disrupted every trial still running."""
        self._interrupting = True
        for name, process in list(self.processes.items()):
            record = self.records[name]
            if record.phase in TERMINAL_PHASES:
                continue
            self.observations[name] = self._earlier.get(name, []) + process.snapshot()
            disruption = local_disruption(
                process.exit_code, "Interrupted", name, record.disruptions
            )
            assert disruption is not None
            self._disrupted(record, process, disruption)

    def _act(self, plan: Plan) -> FinishExperiment | None:
        for action in plan.actions:
            if isinstance(action, StopTrial):
                self._stop(action)
        for action in plan.of(StartTrial):
            if trial_name(self.name, action.index, action.attempt) in self.records:
                continue
            record = TrialRecord.start(self.name, self.spec, action)
            self._add(record)
            if action.why == "retry":
                self._event("TrialRetried", f"{record.name}: attempt {action.attempt}")
            self._launch(record)
        return plan.finished

    def _stop(self, action: StopTrial) -> None:
        record = self.records.get(action.name)
        process = self.processes.get(action.name)
        if record is None or record.phase in TERMINAL_PHASES:
            return
        status = stop_status(action, time.time())
        if process is not None:
            # The verdict now; the phase and the end once the process has ended.
            self.records[record.name] = record.with_status(
                {k: v for k, v in status.items() if k not in ("phase", "completionTime")}
            )
            process.stop(action.phase, self.stop_grace)
        else:
            self._save(record.with_status(status))

    def _launch(self, record: TrialRecord) -> None:
        parameters = record.parameters
        filled = placeholder_values(self.spec, parameters)  # inactive parameters: ''
        argv = [substitute_text(a, filled) for a in self._argv]
        env = self._base_env.copy()
        for name, value in self._env:
            env[name] = substitute_text(value, filled) if isinstance(value, str) else str(value)
        env.update(
            trial_environment(self.name, record.name, parameters, record.seed, record.attempt)
        )
        # Every run and attempt of the trial shares one directory (docs/checkpoints.md).
        checkpoints = self.dir.checkpoint_dir(trial_name(self.name, record.index))
        checkpoints.mkdir(parents=True, exist_ok=True)
        env[ENV_CHECKPOINT_DIR] = str(checkpoints)
        process = TrialProcess(
            record.name,
            argv,
            env,
            self.workdir,
            self.dir.log_path(record.name),
            ObservationReader(self._parser),
            self.wakeup,
            self._wakes,
        )
        self._save(
            dataclasses.replace(
                record,
                phase="Running",
                # A run after a disruption goes on with the trial's first start.
                start_time=(record.start_time if record.disruptions else None) or time.time(),
                reason=None if record.disruptions else record.reason,
                message=None if record.disruptions else record.message,
                command=tuple(argv),
                node=self.node,
                gpu_type=self.gpu_type,
            )
        )
        self.processes[record.name] = process
        self.observations[record.name] = list(self._earlier.get(record.name, []))
        self._histories.pop(record.name, None)
        process.start()

    # -- recording ---------------------------------------------------------------------

    def _save(self, record: TrialRecord) -> None:
        """A trial's new state: its record now, written at the end of this round (_persist)."""
        self.records[record.name] = record
        self._unsaved[record.name] = record

    def _event(self, kind: str, message: str) -> None:
        self._unwritten_events.append((kind, message))

    def _persist(self) -> None:
        """Hand this round's changed records to the writer and write its events.

        Called once the round's new trials have started: a trial's end is
        concluded, the next trial planned and started, and only then is either
        written down.  The records go to the background writer (an ended
        trial's with its observations), the events to the
        events file, in the order they happened.
        """
        unsaved, self._unsaved = self._unsaved, {}
        for record in unsaved.values():
            if record.phase in TERMINAL_PHASES:
                observations = self._observed(record.name, record)
                self.writer.save(record, observations=observations)
                # The writer took a copy, the planner its view: the last one is kept
                # for the tables, so memory does not grow with the steps trials ran.
                self.observations[record.name] = observations[-1:]
            else:
                started = record.phase == "Running"
                self.writer.save(record, START_RECORD_DELAY if started else 0.0)
        events, self._unwritten_events = self._unwritten_events, []
        for kind, message in events:
            self.dir.event(kind, message)

    def _stop_all(self, reason: str) -> None:
        for process in self.processes.values():
            process.stop(reason, self.stop_grace)
        deadline = time.monotonic() + self.stop_grace
        for process in self.processes.values():
            process.wait(max(0.0, deadline - time.monotonic()))
            if not process.done:
                process.kill()
                process.wait(2.0)


def _local_gpu() -> str | None:
    """This machine's GPU model, when nvidia-smi can say (lineage only)."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return None
    try:
        out = subprocess.run(
            [tool, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = sorted({line.strip() for line in out.splitlines() if line.strip()})
    return ", ".join(names) or None
