"""The Job (and headless Service) that runs one trial attempt.

Pure: builds dicts from the Experiment and the Trial; the reconciler creates
them.  The pod template is the user's, untouched but for what Trialforge must
add: parameters filled in, TRIALFORGE_* variables, labels, and for several
workers the torchrun-style rendezvous variables.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from trialforge.api.experiment import Experiment
from trialforge.engine.template import substitute_container, substitute_text, trial_environment
from trialforge.kube import names


def owner_reference(obj: Mapping[str, Any], controller: bool = True) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def trial_labels(experiment: str, trial: str, index: int, attempt: int) -> dict[str, str]:
    return {
        names.LABEL_EXPERIMENT: experiment,
        names.LABEL_TRIAL: trial,
        names.LABEL_INDEX: str(index),
        names.LABEL_ATTEMPT: str(attempt),
        names.LABEL_MANAGED: names.MANAGER,
    }


def _env_list(values: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def build_job(
    experiment: Experiment,
    trial: Mapping[str, Any],
    ingest_url: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The Job for ``trial`` (a Trial object as read from the API) and, for
    multi-node trials, its headless Service."""
    spec = experiment.spec
    name = trial["metadata"]["name"]
    namespace = trial["metadata"].get("namespace")
    tspec = trial["spec"]
    parameters = tspec["parameters"]
    labels = trial_labels(experiment.name, name, tspec["index"], tspec.get("attempt", 0))
    workers = spec.trial.workers

    template = copy.deepcopy(spec.trial.template)
    pod_meta = template.setdefault("metadata", {})
    # Parameters may also label and annotate the pods (dashboards, schedulers).
    for key in ("labels", "annotations"):
        if isinstance(pod_meta.get(key), dict):
            pod_meta[key] = {
                k: substitute_text(str(v), parameters) for k, v in pod_meta[key].items()
            }
    pod_meta.setdefault("labels", {}).update(labels)
    pod_spec = template.setdefault("spec", {})
    # Retries are new attempts decided by the engine, never the kubelet's.
    pod_spec["restartPolicy"] = "Never"

    env = trial_environment(
        experiment.name, name, parameters, tspec["seed"], tspec.get("attempt", 0)
    )
    env["TRIALFORGE_WORKERS"] = str(workers)
    extra: list[dict[str, Any]] = _env_list(env)
    if ingest_url:
        extra.append({"name": "TRIALFORGE_INGEST_URL", "value": ingest_url})
        extra.append(
            {
                "name": "TRIALFORGE_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": names.token_secret_name(name),
                        "key": names.INGEST_TOKEN_KEY,
                    }
                },
            }
        )
    if workers > 1:
        service = name
        extra += _env_list(
            {
                "MASTER_ADDR": f"{name}-0.{service}",
                "MASTER_PORT": str(names.MASTER_PORT),
                "WORLD_SIZE": str(workers),
                "NNODES": str(workers),
            }
        )
        # torchrun reads RANK / NODE_RANK; the Indexed Job gives each pod its index.
        index_ref = {
            "fieldRef": {
                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
            }
        }
        extra += [
            {"name": "RANK", "valueFrom": index_ref},
            {"name": "NODE_RANK", "valueFrom": index_ref},
        ]
        pod_spec["subdomain"] = service

    containers = []
    for container in pod_spec.get("containers", []):
        filled = substitute_container(container, parameters)
        user_env = [
            e for e in filled.get("env") or [] if e.get("name") not in {x["name"] for x in extra}
        ]
        filled["env"] = user_env + extra
        containers.append(filled)
    pod_spec["containers"] = containers

    job_labels = dict(labels)
    if spec.queue:
        job_labels[names.KUEUE_QUEUE_LABEL] = spec.queue
    # No ttlSecondsAfterFinished: the Job stays until its Trial goes, so its
    # outcome can always be read back after an operator restart.
    job_spec: dict[str, Any] = {"backoffLimit": 0, "template": template}
    timeout = spec.trial.timeout_seconds
    if timeout is not None:
        job_spec["activeDeadlineSeconds"] = max(1, int(timeout))
    if workers > 1:
        job_spec.update(completionMode="Indexed", completions=workers, parallelism=workers)
    if spec.queue:
        # Kueue admits the Job by unsuspending it.
        job_spec["suspend"] = True

    owner = owner_reference(trial)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": names.job_name(name),
            "namespace": namespace,
            "labels": job_labels,
            "ownerReferences": [owner],
        },
        "spec": job_spec,
    }
    service_obj = None
    if workers > 1:
        service_obj = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "ownerReferences": [owner],
            },
            "spec": {
                "clusterIP": "None",
                "selector": {names.LABEL_TRIAL: name},
                "publishNotReadyAddresses": True,
                "ports": [{"name": "rendezvous", "port": names.MASTER_PORT}],
            },
        }
    return job, service_obj
