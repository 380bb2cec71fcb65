"""One trial attempt as a local subprocess, its output read into observations."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from trialforge.api.observation import Observation
from trialforge.engine.lineage import ARTIFACT_KEY, artifact_uri
from trialforge.metrics.parsers import ObservationReader

log = logging.getLogger(__name__)


class _Pumps:
    """Daemon threads that read trials' output, each reused from trial to trial.

    ``Thread.start()`` waits until the new thread runs, and right after a fork
    that is a scheduler's wake-up away (a millisecond or more on a busy
    machine), every trial.  Handing the work to an idle thread does not wait.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0

    def submit(self, task: Callable[[], None]) -> None:
        self._tasks.put(task)
        with self._lock:
            if self._idle:
                self._idle -= 1
                return
        threading.Thread(target=self._work, name="trialforge-pump", daemon=True).start()

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            try:
                task()
            except Exception:
                log.exception("reading a trial's output failed")
            with self._lock:
                self._idle += 1


_PUMPS = _Pumps()
_DEVNULL: int | None = None


def _devnull() -> int:
    """One /dev/null for every trial's stdin (Popen's DEVNULL opens it again each time)."""
    global _DEVNULL
    if _DEVNULL is None:
        _DEVNULL = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _DEVNULL


class TrialProcess:
    """Runs a trainer in its own process group, so stopping it stops its children too."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        reader: ObservationReader,
        wakeup: queue.Queue[tuple[str, str]],
        wakes: Callable[[Observation], bool] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env  # the caller's, built for this process alone
        self.cwd = cwd
        self.log_path = log_path
        self.reader = reader
        self.wakeup = wakeup
        # Which observations put an event on ``wakeup`` (None: every one); the
        # exit always does.
        self.wakes = wakes
        self.observations: list[Observation] = []
        # The last artifact URI the trainer reported (engine.lineage), found
        # as its output is read.
        self.artifact_uri: str | None = None
        self.started_at: float | None = None
        self.exit_code: int | None = None
        self.stop_reason: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._kill_at: float | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()

    def start(self) -> None:
        self.started_at = time.time()
        try:
            self._proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=_devnull(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            # A missing program is the trial's failure, not the runner's.
            self.log_path.write_text(f"trialforge: cannot start {self.argv[0]!r}: {exc}\n")
            self.exit_code = 127
            self._done.set()
            self.wakeup.put(("exit", self.name))
            return
        _PUMPS.submit(self._pump)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def snapshot(self) -> list[Observation]:
        with self._lock:
            return list(self.observations)

    def stop(self, reason: str, grace: float = 5.0) -> None:
        """Ask the process group to end (SIGTERM), and kill it after ``grace`` seconds."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._signal(signal.SIGTERM)
        if self._kill_at is None:
            self._kill_at = time.monotonic() + grace

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (the process may still be ending)."""
        return self._kill_at is not None

    def kill_in(self) -> float | None:
        """Seconds until :meth:`enforce` kills a stopping process; None if not stopping."""
        if self._kill_at is None or self.done:
            return None
        return self._kill_at - time.monotonic()

    def enforce(self) -> None:
        """Kill a process group that ignored SIGTERM past its grace period."""
        if self._kill_at is not None and not self.done and time.monotonic() >= self._kill_at:
            self._signal(signal.SIGKILL)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self.done:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        # Afresh: output of an attempt that a crash cut short is not this one's.
        # The observations are kept here and recorded with the attempt's end
        # (local.rundir): a resume runs a trial that was running from its start.
        with open(self.log_path, "wb") as log:
            for raw in self._proc.stdout:
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", "replace")
                if ARTIFACT_KEY in line:
                    # As the log reads back in text mode: \r ends a line too.
                    self.artifact_uri = artifact_uri(io.StringIO(line, newline=None)) or (
                        self.artifact_uri
                    )
                observation = self.reader.feed_line(line.rstrip("\r\n"))
                if observation is None:
                    continue
                if observation.time is None:
                    observation = Observation(observation.step, observation.metrics, time.time())
                with self._lock:
                    self.observations.append(observation)
                if self.wakes is None or self.wakes(observation):
                    self.wakeup.put(("observation", self.name))
        self.exit_code = self._proc.wait()
        self._done.set()
        self.wakeup.put(("exit", self.name))
