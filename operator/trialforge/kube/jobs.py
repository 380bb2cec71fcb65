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
from trialforge.api.trial import trial_name
from trialforge.engine.template import (
    placeholder_values,
    substitute_container,
    substitute_text,
    trial_environment,
)
from trialforge.kube import names
from trialforge.metrics import contract as c


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


def _quantities_as_strings(container: dict[str, Any]) -> None:
    """``nvidia.com/gpu: 1`` as the string the API's Quantity type is.

    YAML users write resource amounts as numbers, which the API server accepts,
    but the Kubernetes client refuses a number where its model says string.
    """
    resources = container.get("resources") or {}
    for kind in ("limits", "requests"):
        amounts = resources.get(kind)
        if isinstance(amounts, dict):
            resources[kind] = {k: str(v) for k, v in amounts.items()}


def build_job(
    experiment: Experiment,
    trial: Mapping[str, Any],
    ingest_url: str | None = None,
    collector_image: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The Job for ``trial`` (a Trial object as read from the API) and, for
    multi-node trials, its headless Service.

    With an ingest URL and a collector image, every pod gets the metrics
    collector as a native sidecar (see :func:`add_collector`)."""
    spec = experiment.spec
    name = trial["metadata"]["name"]
    tspec = trial["spec"]
    labels = trial_labels(experiment.name, name, tspec["index"], tspec.get("attempt", 0))
    workers = spec.trial.workers
    filled = placeholder_values(spec, tspec["parameters"])  # inactive parameters: ''
    template = _pod_template(spec.trial.template, filled, labels)
    pod_spec = template["spec"]
    token_ref = names.token_secret_ref(
        experiment.name, name, int(tspec["index"]), experiment.spec.trial.retries
    )
    extra = _trial_env(experiment, trial, ingest_url, token_ref)
    if workers > 1:
        pod_spec["subdomain"] = name  # the headless Service's name
    _fill_containers(pod_spec, filled, extra)
    _mount_checkpoints(experiment, pod_spec, int(tspec["index"]))
    if ingest_url and collector_image:
        add_collector(experiment, pod_spec, ingest_url, collector_image, workers > 1, token_ref)

    job_labels = dict(labels)
    if spec.queue:
        job_labels[names.KUEUE_QUEUE_LABEL] = spec.queue
    owner = owner_reference(trial)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": names.job_name(name),
            "namespace": trial["metadata"].get("namespace"),
            "labels": job_labels,
            "ownerReferences": [owner],
        },
        "spec": _job_spec(experiment, template),
    }
    service = _headless_service(trial, labels, owner) if workers > 1 else None
    return job, service


def _pod_template(
    user_template: Mapping[str, Any], parameters: Mapping[str, Any], labels: Mapping[str, str]
) -> dict[str, Any]:
    """The user's pod template with parameters in its labels and annotations, and ours."""
    template = copy.deepcopy(dict(user_template))
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
    return template


def _trial_env(
    experiment: Experiment,
    trial: Mapping[str, Any],
    ingest_url: str | None,
    token_ref: Mapping[str, str],
) -> list[dict[str, Any]]:
    """What every container of the trial's pods gets: TRIALFORGE_*, and for several
    workers the torchrun-style rendezvous."""
    name = trial["metadata"]["name"]
    tspec = trial["spec"]
    workers = experiment.spec.trial.workers
    env = trial_environment(
        experiment.name, name, tspec["parameters"], tspec["seed"], tspec.get("attempt", 0)
    )
    env[c.ENV_WORKERS] = str(workers)
    extra: list[dict[str, Any]] = _env_list(env)
    if ingest_url:
        extra.append({"name": c.ENV_INGEST_URL, "value": ingest_url})
        extra.append({"name": c.ENV_TOKEN, "valueFrom": {"secretKeyRef": dict(token_ref)}})
    if workers > 1:
        extra += _env_list(
            {
                "MASTER_ADDR": f"{name}-0.{name}",  # pod 0 behind the headless Service
                "MASTER_PORT": str(names.MASTER_PORT),
                "WORLD_SIZE": str(workers),
                "NNODES": str(workers),
            }
        )
        # torchrun reads RANK / NODE_RANK; the Indexed Job gives each pod its index.
        index_ref = {"fieldRef": {"fieldPath": COMPLETION_INDEX}}
        extra += [
            {"name": "RANK", "valueFrom": index_ref},
            {"name": "NODE_RANK", "valueFrom": index_ref},
        ]
    return extra


def _fill_containers(
    pod_spec: dict[str, Any], parameters: Mapping[str, Any], extra: list[dict[str, Any]]
) -> None:
    """Parameters into every container, ``extra`` over the user's variables of the same name."""
    ours = {x["name"] for x in extra}
    containers = []
    for container in pod_spec.get("containers", []):
        filled = substitute_container(container, parameters)
        user_env = [e for e in filled.get("env") or [] if e.get("name") not in ours]
        filled["env"] = user_env + extra
        _quantities_as_strings(filled)
        containers.append(filled)
    pod_spec["containers"] = containers
    for container in pod_spec.get("initContainers") or []:
        _quantities_as_strings(container)


def checkpoint_sub_path(experiment: str, index: int) -> str:
    """A trial's directory in the checkpoint volume: the same for all its runs and attempts."""
    return f"{experiment}/{trial_name(experiment, index)}"


def _mount_checkpoints(experiment: Experiment, pod_spec: dict[str, Any], index: int) -> None:
    """The trial's sub-path of spec.trial.checkpoint's volume, in every main container
    at its mountPath, and TRIALFORGE_CHECKPOINT_DIR saying where (docs/checkpoints.md).

    The kubelet creates the sub-path; nothing here or in the trainer's client
    replaces or re-permissions the mount point itself."""
    checkpoint = experiment.spec.trial.checkpoint
    if checkpoint is None:
        return
    mount = {
        "name": checkpoint.volume,
        "mountPath": checkpoint.mount_path,
        "subPath": checkpoint_sub_path(experiment.name, index),
    }
    env = {"name": c.ENV_CHECKPOINT_DIR, "value": checkpoint.mount_path}
    for container in pod_spec.get("containers") or []:
        mounts = [
            m
            for m in container.get("volumeMounts") or []
            if m.get("mountPath") != checkpoint.mount_path
        ]
        container["volumeMounts"] = [*mounts, dict(mount)]
        others = [e for e in container.get("env") or [] if e.get("name") != c.ENV_CHECKPOINT_DIR]
        container["env"] = [*others, dict(env)]


def _job_spec(experiment: Experiment, template: dict[str, Any]) -> dict[str, Any]:
    spec = experiment.spec
    workers = spec.trial.workers
    # No ttlSecondsAfterFinished: the Job stays until its Trial goes, so its
    # outcome can always be read back after an operator restart.
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        # A pod that a disruption ended (preemption, eviction, a drain, a lost
        # node: its DisruptionTarget condition) is no failure of the Job: the
        # Job controller makes a new pod, once the old one has ended, and the
        # operator counts the disruption (engine.disruption decides whether
        # the trial may go on: spec.trial.maxDisruptions).
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                }
            ]
        },
        "podReplacementPolicy": "Failed",
        "template": template,
    }
    timeout = spec.trial.timeout_seconds
    if timeout is not None:
        job_spec["activeDeadlineSeconds"] = max(1, int(timeout))
    if workers > 1:
        job_spec.update(completionMode="Indexed", completions=workers, parallelism=workers)
    if spec.queue:
        # Kueue admits the Job by unsuspending it.
        job_spec["suspend"] = True
    return job_spec


def _headless_service(
    trial: Mapping[str, Any], labels: Mapping[str, str], owner: dict[str, Any]
) -> dict[str, Any]:
    """The rendezvous of a multi-node trial: pod 0 is ``<trial>-0.<trial>``."""
    name = trial["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": trial["metadata"].get("namespace"),
            "labels": dict(labels),
            "ownerReferences": [owner],
        },
        "spec": {
            "clusterIP": "None",
            "selector": {names.LABEL_TRIAL: name},
            "publishNotReadyAddresses": True,
            "ports": [{"name": "rendezvous", "port": names.MASTER_PORT}],
        },
    }


# -- the metrics collector sidecar ---------------------------------------------------------

COLLECTOR_NAME = "trialforge-collector"
ENTRYPOINT_INSTALLER_NAME = "trialforge-entrypoint"
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
SHARED_VOLUME = "trialforge-shared"
METRICS_VOLUME = "trialforge-metrics"
COLLECTOR_RESOURCES = {
    "requests": {"cpu": "10m", "memory": "32Mi"},
    "limits": {"memory": "96Mi"},
}


def _metrics_mount(source: str, path: str | None) -> str | None:
    """Where an absolute metrics path lives: a folder both containers mount."""
    if source not in c.PATH_SOURCES or not path or not path.startswith("/"):
        return None
    folder = path if source == "tensorboard" else path.rsplit("/", 1)[0]
    return folder.rstrip("/") or None


def wrap_command(container: dict[str, Any]) -> bool:
    """Run the trainer under the entrypoint that copies its output for the ``stdout``
    source (and forwards signals to it, and records its exit code).

    Needs the container's ``command`` (an image's ENTRYPOINT cannot be known here);
    False when it cannot wrap.
    """
    command = container.get("command")
    if not command:
        return False
    args = container.pop("args", None) or []
    container["command"] = c.entrypoint_command([*command, *args])
    return True


def _entrypoint_installer(image: str, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """The init container that puts the entrypoint into the shared volume, before the
    collector and the trainer start."""
    return {
        "name": ENTRYPOINT_INSTALLER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(c.ENTRYPOINT_INSTALL_COMMAND),
        "volumeMounts": copy.deepcopy(mounts),
        "resources": copy.deepcopy(COLLECTOR_RESOURCES),
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
    }


def add_collector(
    experiment: Experiment,
    pod_spec: dict[str, Any],
    ingest_url: str,
    image: str,
    indexed: bool,
    token_ref: dict[str, str],
) -> None:
    """The collector as a native sidecar (an init container with restartPolicy
    Always, Kubernetes >= 1.29), sharing an emptyDir with the trainer (the first
    container). For the ``stdout`` source the trainer runs under the entrypoint, so
    its output and exit code reach the collector; other sources keep its command."""
    metrics = experiment.spec.trial.metrics
    mount = _metrics_mount(metrics.source, metrics.path)
    volumes = pod_spec.setdefault("volumes", [])
    volumes.append({"name": SHARED_VOLUME, "emptyDir": {}})
    mounts = [{"name": SHARED_VOLUME, "mountPath": c.SHARED_DIR}]
    if mount is not None:
        volumes.append({"name": METRICS_VOLUME, "emptyDir": {}})
        mounts.append({"name": METRICS_VOLUME, "mountPath": mount})
    shared = {c.ENV_SHARED_DIR: c.SHARED_DIR, c.ENV_METRICS_SOURCE: metrics.source}
    if metrics.path:
        path = metrics.path if metrics.path.startswith("/") else f"{c.SHARED_DIR}/{metrics.path}"
        shared[c.ENV_METRICS_PATH] = path
    trainer = pod_spec["containers"][0]
    init_containers = pod_spec.setdefault("initContainers", [])
    if metrics.source == "stdout" and wrap_command(trainer):
        init_containers.append(_entrypoint_installer(image, mounts))
    trainer_env = dict(shared)
    if metrics.source == "push":
        trainer_env[c.ENV_REPORT_URL] = c.report_url(c.PUSH_PORT)
    trainer["env"] = [e for e in trainer["env"] if e["name"] not in trainer_env]
    trainer["env"] += _env_list(trainer_env)
    trainer.setdefault("volumeMounts", []).extend(copy.deepcopy(mounts))
    sidecar: dict[str, Any] = {
        "name": COLLECTOR_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "restartPolicy": "Always",
        "command": list(c.COLLECTOR_COMMAND),
        "env": _collector_env(experiment, trainer, shared, ingest_url, indexed, token_ref),
        "volumeMounts": mounts,
        "resources": copy.deepcopy(COLLECTOR_RESOURCES),
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
    }
    if metrics.source == "push":
        # The trainer starts once the push server answers. The kubelet probes from the
        # node, so the server listens on the pod's IP too (c.POD_PUSH_LISTEN).
        probe = {"path": c.HEALTH_PATH, "port": c.PUSH_PORT}
        sidecar["startupProbe"] = {"httpGet": probe, "periodSeconds": 1, "failureThreshold": 60}
    init_containers.append(sidecar)


def _collector_env(
    experiment: Experiment,
    trainer: Mapping[str, Any],
    shared: Mapping[str, str],
    ingest_url: str,
    indexed: bool,
    token_ref: Mapping[str, str],
) -> list[dict[str, Any]]:
    """The sidecar's environment: what ``trialforge collector`` reads (its Config)."""
    metrics = experiment.spec.trial.metrics
    env = [e for e in trainer["env"] if e["name"] == c.ENV_TRIAL]
    env += _env_list(shared)
    env += _env_list(
        {
            c.ENV_METRICS_FORMAT: metrics.format,
            c.ENV_PUSH_PORT: str(c.PUSH_PORT),
            c.ENV_PUSH_LISTEN: c.POD_PUSH_LISTEN,
            c.ENV_INGEST_URL: ingest_url,
        }
    )
    if metrics.pattern:
        env.append({"name": c.ENV_METRICS_PATTERN, "value": metrics.pattern})
    namespace_ref = {"fieldRef": {"fieldPath": "metadata.namespace"}}
    env.append({"name": c.ENV_NAMESPACE, "valueFrom": namespace_ref})
    env.append({"name": c.ENV_TOKEN, "valueFrom": {"secretKeyRef": dict(token_ref)}})
    if indexed:
        rank_ref = {"fieldRef": {"fieldPath": COMPLETION_INDEX}}
        env.append({"name": c.ENV_RANK, "valueFrom": rank_ref})
    return env
