"""An experiment's records, read from a local run directory or from the cluster.

Reports, ``reproduce`` and the MLflow export read runs through this module, so
each of them works on both: a cluster Trial and a local journal line are
the same :class:`~trialforge.engine.record.TrialRecord`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from trialforge.api.experiment import Experiment, ExperimentSpec
from trialforge.api.observation import Observation
from trialforge.engine import space
from trialforge.engine.history import observations_from
from trialforge.engine.objective import mean_values
from trialforge.engine.planner import ROLE_SEARCH, slot_of
from trialforge.engine.record import TrialRecord
from trialforge.engine.record import latest_attempts as engine_latest_attempts
from trialforge.local.rundir import RunDirectory


@dataclass
class RunData:
    name: str
    experiment: Experiment
    state: dict[str, Any]  # phase, reason, message, trials, best, comparison (status shape)
    records: list[TrialRecord]
    source: str  # "run directory X" or "cluster NS/NAME"
    workdir: Path | None = None
    run_dir: Path | None = None
    namespace: str | None = None
    observations: dict[str, list[Observation]] = field(default_factory=dict)

    @property
    def spec(self) -> ExperimentSpec:
        return self.experiment.spec

    def record(self, name: str) -> TrialRecord:
        for r in self.records:
            if r.name == name:
                return r
        known = ", ".join(r.name for r in self.records[:10])
        raise KeyError(f"no trial {name!r} in {self.source} (trials: {known}, ...)")


def _experiment(doc: Mapping[str, Any]) -> Experiment:
    # The recorded document was valid when it ran; it is read as it is (the
    # dump carries defaults a user never wrote, which the cross-field rules
    # of load_experiment would take for the user's own words).
    return Experiment.model_validate({k: v for k, v in doc.items() if k != "status"})


def from_run_dir(path: str | Path) -> RunData:
    directory = RunDirectory(Path(path))
    doc = directory.recorded_spec()
    if doc is None:
        raise FileNotFoundError(f"{path} is not a run directory (no experiment.yaml)")
    experiment = _experiment(doc)
    state = directory.load_state()
    records = directory.load_trials()
    workdir = state.get("workdir")
    return RunData(
        experiment.name,
        experiment,
        state,
        records,
        f"run directory {path}",
        Path(workdir) if workdir else None,
        Path(path),
        observations={r.name: directory.load_observations(r.name) for r in records},
    )


def from_cluster(
    namespace: str, name: str, kubeconfig: str | None = None, kube: Any = None
) -> RunData:
    """An Experiment and its Trials, read from the cluster."""
    if kube is None:
        from kubernetes import client, config

        from trialforge.kube.client import Kube

        try:
            config.load_kube_config(config_file=kubeconfig)
        except config.ConfigException:
            config.load_incluster_config()
        kube = Kube(client.ApiClient())
    obj = kube.get_experiment(namespace, name)
    if obj is None:
        raise KeyError(f"no Experiment {namespace}/{name}")
    experiment = _experiment(obj)
    trials = sorted(
        kube.list_trials(namespace, name),
        key=lambda t: (t["spec"].get("index", 0), t["spec"].get("attempt", 0)),
    )
    metric = experiment.spec.all_objectives[0].metric
    records = [TrialRecord.from_resource(t, metric) for t in trials]
    observations = {
        t["metadata"]["name"]: observations_from((t.get("status") or {}).get("history") or {})
        for t in trials
    }
    return RunData(
        name,
        experiment,
        dict(obj.get("status") or {}),
        records,
        f"cluster {namespace}/{name}",
        namespace=namespace,
        observations=observations,
    )


def latest_attempts(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Each trial index's latest attempt, by index."""
    latest = engine_latest_attempts(records)
    return [latest[i] for i in sorted(latest)]


def study_of(data: RunData) -> optuna.Study:
    """The search's configurations as an Optuna study (means over repeats), for importances."""
    spec = data.spec
    distributions = space.distributions(spec.parameters)
    study = optuna.create_study(directions=[o.direction for o in spec.all_objectives])
    if spec.arms:
        return study
    configs: dict[int, list[TrialRecord]] = {}
    for r in latest_attempts(data.records):
        slot = slot_of(r)
        if slot.role != ROLE_SEARCH or slot.search_index is None:
            continue
        if r.phase == "Succeeded" and r.values:
            configs.setdefault(slot.search_index, []).append(r)
    for k in sorted(configs):
        runs = configs[k]
        values = mean_values((r.values for r in runs), len(spec.all_objectives))
        if values is None:
            continue
        params = {n: v for n, v in runs[0].parameters.items() if n in distributions}
        try:
            study.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions={n: distributions[n] for n in params},
                    values=list(values),
                )
            )
        except ValueError:
            continue  # a value outside today's space (the spec changed): left out
    return study
