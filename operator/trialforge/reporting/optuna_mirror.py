"""An experiment mirrored into an Optuna storage: what optuna-dashboard (and any
Optuna tool) reads.

Each trial attempt (a :class:`~trialforge.engine.record.TrialRecord`) becomes one
Optuna trial, in index and attempt order: its state (Pending -> WAITING, Running
-> RUNNING, Succeeded -> COMPLETE, Pruned -> PRUNED, Failed and Cancelled ->
FAIL), its parameters with the search space's distributions, its intermediate
values (the first objective by step), its objective values, and its lineage as
user attributes (``trialforge_trial``, ``phase``, ``reason``, ``role``, ``seed``,
``node``, ``image_digest``, ...). A pruned trial's value is its last
intermediate value, as Optuna's own ``tell`` records one.

:class:`Mirror` keeps a storage in step with an experiment: :meth:`Mirror.sync`
adds the trials it has not seen and brings the unfinished ones up to date
(new steps, new state, new attributes); a finished Optuna trial cannot change,
so it is written once, when it ends. A mirror that starts on a storage that
already holds the study (an export run again, a dashboard restarted) finds its
trials by their ``trialforge_trial`` system attribute and adds only the rest.

The sources (:class:`RunDirSource`, :class:`ClusterSource`) read the experiment
as it is now; while a local trial runs, its observations are read from its log
(the journal holds them only once it has ended).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from trialforge.api.observation import Observation
from trialforge.engine import space
from trialforge.metrics.parsers import ObservationReader, make_parser
from trialforge.reporting.rundata import RunData, from_cluster, from_run_dir

STATES: dict[str, TrialState] = {
    "Pending": TrialState.WAITING,
    "Running": TrialState.RUNNING,
    "Succeeded": TrialState.COMPLETE,
    "Pruned": TrialState.PRUNED,
    "Failed": TrialState.FAIL,
    "Cancelled": TrialState.FAIL,
}
TRIAL_KEY = "trialforge_trial"  # system attribute: the attempt's name (the mirror's key)
METRIC_NAMES_KEY = "study:metric_names"  # Optuna's own (Study.set_metric_names)

# Lineage: TrialRecord attribute -> user attribute.
_LINEAGE = (
    "index",
    "attempt",
    "phase",
    "reason",
    "message",
    "role",
    "config",
    "repeat",
    "seed",
    "code_version",
    "data_version",
    "node",
    "gpu_type",
    "image_digest",
    "artifact_uri",
    "exit_code",
    "gpu_seconds",
)


class MirrorError(ValueError):
    """The storage cannot hold this experiment (a study of that name that differs)."""


def open_storage(url: str | BaseStorage) -> BaseStorage:
    """An Optuna storage: an RDB URL (``sqlite:///study.db``, ``postgresql://...``),
    a journal file (``journal:PATH`` or a path), or a storage object."""
    if isinstance(url, BaseStorage):
        return url
    if not url:
        raise MirrorError("--storage: give an Optuna storage URL (sqlite:///study.db) or a file")
    if "://" in url:
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as exc:  # SQLAlchemy's errors: a bad URL, a missing driver
            raise MirrorError(f"--storage {url}: Optuna cannot open it: {exc}") from None
    path = Path(url.removeprefix("journal:"))
    if path.is_dir():
        raise MirrorError(f"--storage {url}: is a folder; a journal storage is a file")
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(path)))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def intermediate_values(data: RunData, name: str, record: Any) -> dict[int, float]:
    """The first objective by step: from the attempt's observations when there are
    any (a local run keeps them all), else the record's bounded history."""
    metric = data.spec.all_objectives[0].metric
    observations = data.observations.get(name) or []
    values = {o.step: o.metrics[metric] for o in observations if metric in o.metrics}
    if not values:
        values = dict(record.intermediate)
    return {int(s): float(v) for s, v in sorted(values.items()) if _finite(v)}


def user_attrs(record: Any) -> dict[str, Any]:
    """A record's lineage, for Optuna's user attributes (JSON values, None left out)."""
    out: dict[str, Any] = {TRIAL_KEY: record.name}
    for key in _LINEAGE:
        value = getattr(record, key)
        if value is not None:
            out[key] = value
    if record.command:
        out["command"] = list(record.command)
    for key in ("start_time", "completion_time"):
        value = getattr(record, key)
        if value is not None:
            out[key] = _when(value).isoformat()
    return out


def _when(seconds: float | None) -> dt.datetime | None:
    # Optuna's storages keep naive local times (datetime.now()).
    return None if seconds is None else dt.datetime.fromtimestamp(float(seconds))


def trial_values(
    record: Any, state: TrialState, steps: Mapping[int, float], objectives: int = 1
) -> list[float] | None:
    if state == TrialState.COMPLETE:
        values = list(record.values or ())
        ok = len(values) == objectives and all(_finite(v) for v in values)
        return values if ok else None
    if state == TrialState.PRUNED and steps and objectives == 1:
        return [steps[max(steps)]]  # as optuna's tell() records a pruned trial
    return None


@dataclass
class SyncResult:
    created: int = 0
    updated: int = 0
    finished: int = 0
    unchanged: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "created": self.created,
            "updated": self.updated,
            "finished": self.finished,
            "unchanged": self.unchanged,
        }


@dataclass
class _Seen:
    trial_id: int
    state: TrialState
    steps: dict[int, float] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)


class Mirror:
    """Keeps one Optuna study in a storage in step with one experiment."""

    def __init__(self, storage: str | BaseStorage, study_name: str | None = None) -> None:
        self.storage = open_storage(storage)
        self.study_name = study_name
        self.study_id: int | None = None
        self._seen: dict[str, _Seen] = {}
        self._study_attrs: dict[str, Any] = {}
        self._objectives = 1

    # -- the study ----------------------------------------------------------------------

    def _open_study(self, data: RunData) -> int:
        name = self.study_name or data.name
        self.study_name = name
        directions = [
            StudyDirection.MAXIMIZE if o.direction == "maximize" else StudyDirection.MINIMIZE
            for o in data.spec.all_objectives
        ]
        try:
            study_id = self.storage.get_study_id_from_name(name)
        except KeyError:
            study_id = self.storage.create_new_study(directions, name)
        else:
            have = self.storage.get_study_directions(study_id)
            if list(have) != directions:
                raise MirrorError(
                    f"study {name!r} exists in the storage with directions "
                    f"{[d.name.lower() for d in have]}, not "
                    f"{[d.name.lower() for d in directions]}: give another --study-name"
                )
            for trial in self.storage.get_all_trials(study_id, deepcopy=False):
                key = trial.system_attrs.get(TRIAL_KEY)
                if key:
                    self._seen[str(key)] = _Seen(
                        trial._trial_id,
                        trial.state,
                        dict(trial.intermediate_values),
                        dict(trial.user_attrs),
                    )
            self._study_attrs = dict(self.storage.get_study_user_attrs(study_id))
        metrics = [o.metric for o in data.spec.all_objectives]
        if self.storage.get_study_system_attrs(study_id).get(METRIC_NAMES_KEY) != metrics:
            self.storage.set_study_system_attr(study_id, METRIC_NAMES_KEY, metrics)
        return study_id

    def _sync_study_attrs(self, data: RunData) -> None:
        state = data.state
        best = state.get("best") or {}
        attrs = {
            "experiment": data.name,
            "source": data.source,
            "phase": state.get("phase", "Running"),
            "reason": state.get("reason"),
            "message": state.get("message"),
            "objectives": [f"{o.direction} {o.metric}" for o in data.spec.all_objectives],
            "search": data.spec.search.algorithm,
            "early_stopping": data.spec.early_stopping.algorithm,
            "best_trial": best.get("trial"),
            "trials": state.get("trials") or {},
        }
        for key, value in attrs.items():
            if value is not None and self._study_attrs.get(key) != value:
                assert self.study_id is not None
                self.storage.set_study_user_attr(self.study_id, key, value)
                self._study_attrs[key] = value

    # -- trials -------------------------------------------------------------------------

    def sync(self, data: RunData) -> SyncResult:
        """Bring the study in line with ``data``; returns what changed."""
        if self.study_id is None:
            self.study_id = self._open_study(data)
        self._objectives = len(data.spec.all_objectives)
        self._sync_study_attrs(data)
        distributions = space.distributions(data.spec.parameters)
        result = SyncResult()
        for record in sorted(data.records, key=lambda r: (r.index, r.attempt)):
            state = STATES.get(record.phase, TrialState.WAITING)
            steps = intermediate_values(data, record.name, record)
            attrs = user_attrs(record)
            seen = self._seen.get(record.name)
            if seen is None:
                self._create(record, state, steps, attrs, distributions)
                result.created += 1
                if state.is_finished():
                    result.finished += 1
            elif seen.state.is_finished():
                result.unchanged += 1
            elif self._update_unless_finished(seen, record, state, steps, attrs):
                result.updated += 1
                if state.is_finished():
                    result.finished += 1
            else:
                result.unchanged += 1
        return result

    def _params(
        self, record: Any, distributions: Mapping[str, BaseDistribution]
    ) -> tuple[dict[str, Any], dict[str, BaseDistribution], dict[str, Any]]:
        """Parameters inside today's space, and the rest (a changed spec) as attributes."""
        params: dict[str, Any] = {}
        dists: dict[str, BaseDistribution] = {}
        outside: dict[str, Any] = {}
        for name, value in record.parameters.items():
            dist = distributions.get(name)
            try:
                inside = dist is not None and dist._contains(dist.to_internal_repr(value))
            except (ValueError, TypeError):
                inside = False
            if inside:
                assert dist is not None
                params[name], dists[name] = value, dist
            else:
                outside[f"param_{name}"] = value
        return params, dists, outside

    def _create(
        self,
        record: Any,
        state: TrialState,
        steps: dict[int, float],
        attrs: dict[str, Any],
        distributions: Mapping[str, BaseDistribution],
    ) -> None:
        assert self.study_id is not None
        params, dists, outside = self._params(record, distributions)
        attrs = {**attrs, **outside}
        values = trial_values(record, state, steps, self._objectives)
        start = _when(record.start_time)
        if start is None and state != TrialState.WAITING:
            start = dt.datetime.now()
        end = _when(record.completion_time) if state.is_finished() else None
        if state.is_finished() and end is None:
            end = dt.datetime.now()
        if start is not None and end is not None and end < start:
            end = start
        template = FrozenTrial(
            number=0,  # the storage numbers it
            state=state,
            value=None,
            values=values,
            datetime_start=start,
            datetime_complete=end,
            params=params,
            distributions=dists,
            user_attrs=attrs,
            system_attrs={TRIAL_KEY: record.name},
            intermediate_values=steps,
            trial_id=0,
        )
        trial_id = self.storage.create_new_trial(self.study_id, template_trial=template)
        self._seen[record.name] = _Seen(trial_id, state, dict(steps), attrs)

    def _update_unless_finished(self, seen: _Seen, *args: Any) -> bool:
        try:
            return self._update(seen, *args)
        except UpdateFinishedTrialError:
            # Finished in the storage by someone else (optuna-dashboard's "Fail trial"
            # button): the mirror leaves it as it is.
            seen.state = self.storage.get_trial(seen.trial_id).state
            return False

    def _update(
        self,
        seen: _Seen,
        record: Any,
        state: TrialState,
        steps: dict[int, float],
        attrs: dict[str, Any],
    ) -> bool:
        changed = False
        storage = self.storage
        if seen.state == TrialState.WAITING and state != TrialState.WAITING:
            # Optuna counts a trial's start from WAITING -> RUNNING.
            storage.set_trial_state_values(seen.trial_id, TrialState.RUNNING)
            seen.state = TrialState.RUNNING
            changed = True
        for step, value in steps.items():
            if seen.steps.get(step) != value:
                storage.set_trial_intermediate_value(seen.trial_id, step, value)
                seen.steps[step] = value
                changed = True
        for key, value in attrs.items():
            if seen.attrs.get(key) != value:
                storage.set_trial_user_attr(seen.trial_id, key, value)
                seen.attrs[key] = value
                changed = True
        if state.is_finished():
            values = trial_values(record, state, seen.steps, self._objectives)
            storage.set_trial_state_values(seen.trial_id, state, values)
            seen.state = state
            changed = True
        return changed

    def trial_ids(self) -> dict[str, int]:
        """Each mirrored attempt's Optuna trial id."""
        return {name: seen.trial_id for name, seen in self._seen.items()}


# -- where an experiment is read from ---------------------------------------------------


class _LogTail:
    """A running local trial's observations, read from its log as it grows."""

    def __init__(self, path: Path, parser: Any) -> None:
        self.path = path
        self.offset = 0
        self.reader = ObservationReader(parser)
        self.observations: list[Observation] = []

    def read(self) -> list[Observation]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return self.observations
        self.offset += len(chunk)
        self.observations += self.reader.feed(chunk.decode("utf-8", errors="replace"))
        return self.observations


class RunDirSource:
    """A local run directory, read again at each :meth:`read` (it may be running)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._tails: dict[str, _LogTail] = {}

    def read(self) -> RunData:
        data = from_run_dir(self.path)
        metrics = data.spec.trial.metrics
        fmt = "json" if metrics.source == "push" else metrics.format  # as local.runner reads it
        parser = make_parser(fmt, metrics.pattern)
        for record in data.records:
            if record.phase != "Running" or data.observations.get(record.name):
                self._tails.pop(record.name, None)
                continue
            tail = self._tails.get(record.name)
            if tail is None:
                tail = self._tails[record.name] = _LogTail(
                    self.path / "trials" / f"{record.name}.log", parser
                )
            data.observations[record.name] = list(tail.read())
        return data

    def describe(self) -> str:
        return f"run directory {self.path}"


class ClusterSource:
    """An Experiment and its Trials on a cluster (one API client, kept)."""

    def __init__(self, namespace: str, name: str, kubeconfig: str | None = None) -> None:
        from kubernetes import client, config

        from trialforge.kube.client import Kube

        try:
            config.load_kube_config(config_file=kubeconfig)
        except (config.ConfigException, FileNotFoundError):
            try:
                config.load_incluster_config()
            except config.ConfigException:
                where = kubeconfig or "$KUBECONFIG or ~/.kube/config"
                raise ValueError(f"no cluster: no kubeconfig at {where}, not in a pod") from None
        self.kube = Kube(client.ApiClient())
        self.namespace, self.name = namespace, name

    def read(self) -> RunData:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return from_cluster(self.namespace, self.name, kube=self.kube)
        except ApiException as exc:
            raise ValueError(
                f"reading Experiment {self.namespace}/{self.name}: {exc.status} {exc.reason}"
            ) from None
        except HTTPError as exc:
            raise ValueError(f"the API server is unreachable: {exc}") from None

    def describe(self) -> str:
        return f"Experiment {self.namespace}/{self.name}"


def export(
    data: RunData, storage: str | BaseStorage, study_name: str | None = None
) -> dict[str, Any]:
    """Write ``data`` into an Optuna storage once (``trialforge export optuna``)."""
    mirror = Mirror(storage, study_name)
    result = mirror.sync(data)
    return {"study": mirror.study_name, "trials": len(mirror.trial_ids()), **result.to_dict()}


def mirrored_trials(storage: BaseStorage, study_name: str) -> Sequence[FrozenTrial]:
    """The study's trials as Optuna reads them back (for tests and checks)."""
    return optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
