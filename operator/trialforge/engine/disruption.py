"""Disruption is not failure: the one rule for a trial's run that something outside ended.

A *disruption* ends a run of a trial for a reason that says nothing about the
trial itself.  The reasons (:class:`Reason`):

``Preempted``
    a more important workload took its place: the scheduler's preemption, or a
    queue (Kueue) that evicted or preempted the trial's workload;
``Evicted``
    the Eviction API removed its pod (a PodDisruptionBudget-aware eviction by
    a person or a tool), or the kubelet evicted it under node pressure;
``Drained``
    an eviction from a node that was cordoned first (``kubectl drain``);
``NodeLost``
    its node went away (deleted, so the pod was garbage-collected) or stopped
    answering (the taint manager evicted the pod from an unreachable node);
``Interrupted``
    a local run only: the runner itself was stopped (Ctrl-C), or a signal from
    outside the runner stopped the trainer (see :func:`local_disruption`).

The rule, which both runtimes follow through :func:`disrupted`:

* The trial runs again: the *same* Trial (the same attempt, parameters, seed,
  checkpoint directory), as a new run.  Its history continues (a step the new
  run reports again replaces the earlier run's point, engine.history), so a
  trainer that resumes from its checkpoint repeats no step.
* The run is counted apart: ``status.disruptions`` and ``status.disruptionHistory``
  (reason, message, time, the run that ended, its node).  A disruption never
  uses up one of ``spec.trial.retries`` and never counts toward
  ``budget.maxFailedTrials``: the trial is not Failed, it is Pending again.
* A trial disrupted more than ``spec.trial.maxDisruptions`` times fails, with
  reason ``TooManyDisruptions`` (not retryable): from then on it is a failure
  like any other.
* Counting is idempotent: a run already in the history is not counted again, so
  a runtime may report the same ended run as often as it sees it (level-based).

How the runtimes find a disruption (they observe, this module decides):

* Kubernetes (kube/disruption.py): a pod's ``DisruptionTarget`` condition,
  which the control plane sets before it ends a pod for preemption
  (``PreemptionByScheduler``), the Eviction API (``EvictionByEvictionAPI``), the
  taint manager (``DeletionByTaintManager``), the pod garbage collector on a
  deleted node (``DeletionByPodGC``) or the kubelet (``TerminationByKubelet``).
  The Job's ``podFailurePolicy`` ignores such pods (the Job controller makes a
  new pod at once, no backoff counted); whether the trial may go on is decided
  here.  A Kueue eviction of a trial's Job (its Workload's ``Evicted``
  condition, reasons ``Preempted``, ``PodsReadyTimeout``, ``InactiveWorkload``,
  ...) maps onto :class:`Reason` in kube/disruption.py the same way and is
  handed to :func:`disrupted` like a pod's.
* Local (local/runner.py): :func:`local_disruption` on how the trainer's
  process ended.
"""

from __future__ import annotations

import enum
import math
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from trialforge.api.experiment import ExperimentSpec
from trialforge.api.observation import Observation
from trialforge.engine.record import rfc3339

# The newest entries of status.disruptionHistory that a Trial keeps.
HISTORY_LIMIT = 20


class Reason(enum.StrEnum):
    """Why a run was disrupted; each member is the string the Trial's status holds."""

    PREEMPTED = "Preempted"
    EVICTED = "Evicted"
    DRAINED = "Drained"
    NODE_LOST = "NodeLost"
    INTERRUPTED = "Interrupted"


TOO_MANY = "TooManyDisruptions"


@dataclass(frozen=True)
class Disruption:
    """One run of a trial that ended by disruption, as a runtime observed it.

    ``run`` names the run (a pod's name; locally the trial's name and run
    number) so that counting it twice is impossible; ``gpu_seconds`` is what
    the run cost before it ended (None: unknown).
    """

    reason: Reason
    message: str
    run: str
    node: str | None = None
    gpu_seconds: float | None = None


def counted(status: Mapping[str, Any], run: str) -> bool:
    """Whether the trial's status already counts ``run`` as disrupted."""
    return any(d.get("run") == run for d in status.get("disruptionHistory") or ())


def disrupted(
    spec: ExperimentSpec, status: Mapping[str, Any], disruption: Disruption, now: float
) -> dict[str, Any]:
    """The Trial status fields after ``disruption`` ended one of its runs (see the module).

    Empty when the run is counted already.  Otherwise the trial is Pending
    again (it runs again) with the disruption counted, or, past
    ``spec.trial.maxDisruptions``, Failed with ``TooManyDisruptions``.  A
    known ``gpu_seconds`` of the run is added to the trial's ``gpuSeconds``.
    """
    if counted(status, disruption.run):
        return {}
    n = int(status.get("disruptions") or 0) + 1
    entry: dict[str, Any] = {
        "reason": str(disruption.reason),
        "message": disruption.message,
        "time": rfc3339(now),
        "run": disruption.run,
    }
    if disruption.node:
        entry["node"] = disruption.node
    history = [*(status.get("disruptionHistory") or ()), entry][-HISTORY_LIMIT:]
    out: dict[str, Any] = {"disruptions": n, "disruptionHistory": history}
    if disruption.gpu_seconds:
        before = float(status.get("gpuSeconds") or 0.0)
        out["gpuSeconds"] = round(before + disruption.gpu_seconds, 3)
    limit = spec.trial.max_disruptions
    if n > limit:
        out.update(
            phase="Failed",
            reason=TOO_MANY,
            message=f"disrupted {n} times, more than spec.trial.maxDisruptions ({limit}); "
            f"the last: {disruption.reason}: {disruption.message}",
            retryable=False,
            completionTime=rfc3339(now),
        )
    else:
        out.update(
            phase="Pending",
            reason=str(disruption.reason),
            message=f"{disruption.message}; it runs again "
            f"(disruption {n} of at most {limit}, not a failure)",
        )
    return out


def last_checkpoint(observations: Iterable[Observation], metric: str) -> int | None:
    """The step of the last checkpoint a trainer reported: the latest value of
    ``metric`` (metrics.contract.CHECKPOINT_METRIC, what
    ``trialforge.report(step, checkpoint=True)`` sends); None if it saved none."""
    step = None
    for obs in observations:
        value = obs.metrics.get(metric)
        if value is not None and math.isfinite(value):
            step = int(value)
    return step


# Signals that end a local trainer from outside the runner and count as a
# disruption: a polite request to stop (a shutdown, a scheduler on the host,
# a person).  SIGKILL does not: the kernel's OOM killer sends it too, and
# running out of memory is the trial's failure (OOMKilled on a cluster).
_OUTSIDE_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


def local_disruption(
    exit_code: int | None, stopped_by: str | None, name: str, run: int
) -> Disruption | None:
    """How a local trainer's end reads under the rule, or None when it is no disruption.

    ``stopped_by`` is why the runner stopped it (None: the runner did not);
    ``run`` counts the trial's runs (0 for the first).  The local rule:

    * the runner's own shutdown (``stopped_by == "Interrupted"``) is a
      disruption whatever the exit code: the trial runs again when the run
      directory is run again;
    * a trainer the runner did not stop that died of SIGTERM, SIGINT or SIGHUP
      (exit code -N), or exited with 128+N as a shell and most trainers that
      save a checkpoint on SIGTERM do, was stopped from outside: a disruption;
    * anything else (an exit code, SIGKILL, a stop the planner asked for, a
      timeout) is not.
    """
    key = f"{name}#{run}"
    if stopped_by == "Interrupted":
        return Disruption(Reason.INTERRUPTED, "the local runner was stopped", key)
    if stopped_by is not None or exit_code is None:
        return None
    number = -exit_code if exit_code < 0 else exit_code - 128
    if number in {int(s) for s in _OUTSIDE_SIGNALS}:
        name_of = signal.Signals(number).name
        return Disruption(
            Reason.INTERRUPTED, f"the trainer was stopped by {name_of} from outside the runner", key
        )
    return None
