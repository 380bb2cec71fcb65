"""The Job/Service builder and the Trial status read from a Job and its pods (pure)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from trialforge.api.validation import load_experiment
from trialforge.kube.jobs import COLLECTOR_NAME, ENTRYPOINT_INSTALLER_NAME, build_job
from trialforge.kube.observe import trial_status_from
from trialforge.metrics import contract
from trialforge.metrics import contract as c

GPU = "nvidia.com/gpu"
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def xp(**spec_overrides: Any) -> Any:
    spec: dict[str, Any] = {
        "objective": {"metric": "loss", "direction": "minimize"},
        "parameters": [
            {"name": "lr", "type": "float", "min": 1e-4, "max": 1e-1, "log": True},
            {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
        ],
        "budget": {"maxTrials": 4, "parallelism": 2},
        "trial": {
            "timeout": "30m",
            "template": {
                "metadata": {
                    "labels": {"team": "vision", "opt": "${params.opt}"},
                    "annotations": {"trialforge.io/kwok-exit-code": "${params.opt}"},
                },
                "spec": {
                    "priorityClassName": "research-high",
                    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                    "tolerations": [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "registry.example/mnist:1.2",
                            "command": ["python", "train.py", "--lr=${params.lr}"],
                            "args": ["--opt=${params.opt}"],
                            "env": [
                                {"name": "OPT", "value": "${params.opt}"},
                                {"name": "KEEP", "value": "as is"},
                            ],
                            "resources": {
                                "limits": {GPU: "2", "memory": "16Gi"},
                                "requests": {GPU: "2", "cpu": "4"},
                            },
                        }
                    ],
                },
            },
        },
    }
    for key, value in spec_overrides.items():
        if key == "trial":
            spec["trial"].update(value)
        else:
            spec[key] = value
    return load_experiment(
        {
            "apiVersion": "trialforge.io/v1alpha1",
            "kind": "Experiment",
            "metadata": {"name": "mnist", "namespace": "ml"},
            "spec": spec,
        }
    )


def trial(name: str = "mnist-3", index: int = 3, attempt: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "trialforge.io/v1alpha1",
        "kind": "Trial",
        "metadata": {"name": name, "namespace": "ml", "uid": "trial-uid-1"},
        "spec": {
            "experiment": "mnist",
            "index": index,
            "attempt": attempt,
            "parameters": {"lr": 0.01, "opt": "adam"},
            "seed": 1234,
        },
    }


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container["env"]}


# -- build_job ------------------------------------------------------------------------


def test_job_is_owned_labelled_and_never_retried_by_kubernetes() -> None:
    job, service = build_job(xp(), trial())
    assert service is None
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    meta = job["metadata"]
    assert meta["name"] == "mnist-3" and meta["namespace"] == "ml"
    assert meta["labels"] == {
        "trialforge.io/experiment": "mnist",
        "trialforge.io/trial": "mnist-3",
        "trialforge.io/index": "3",
        "trialforge.io/attempt": "0",
        "app.kubernetes.io/managed-by": "trialforge",
    }
    (owner,) = meta["ownerReferences"]
    assert owner == {
        "apiVersion": "trialforge.io/v1alpha1",
        "kind": "Trial",
        "name": "mnist-3",
        "uid": "trial-uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    # A disrupted pod is no failure of the Job: it is replaced (engine.disruption counts it).
    assert spec["podFailurePolicy"] == {
        "rules": [
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            }
        ]
    }
    assert spec["podReplacementPolicy"] == "Failed"
    assert spec["activeDeadlineSeconds"] == 1800
    assert "suspend" not in spec and "completionMode" not in spec
    pod = spec["template"]
    assert pod["spec"]["restartPolicy"] == "Never"
    # The pods carry the trial's labels too (the Service selects on them).
    assert pod["metadata"]["labels"]["trialforge.io/trial"] == "mnist-3"
    assert pod["metadata"]["labels"]["team"] == "vision"


def test_no_timeout_means_no_deadline() -> None:
    experiment = xp(trial={"timeout": None})
    job, _ = build_job(experiment, trial())
    assert "activeDeadlineSeconds" not in job["spec"]


def test_a_checkpoint_volume_gives_every_attempt_of_a_trial_the_same_sub_path() -> None:
    base = xp()
    template = copy.deepcopy(base.spec.trial.template)
    template["spec"]["volumes"] = [{"name": "ckpt", "persistentVolumeClaim": {"claimName": "c"}}]
    experiment = xp(trial={"template": template, "checkpoint": {"volume": "ckpt"}})
    first, _ = build_job(experiment, trial())
    retry, _ = build_job(experiment, trial("mnist-3-r1", attempt=1))
    for job in (first, retry):
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["volumeMounts"][-1] == {
            "name": "ckpt",
            "mountPath": "/checkpoints",
            "subPath": "mnist/mnist-3",
        }
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env[c.ENV_CHECKPOINT_DIR] == "/checkpoints"
    # Without spec.trial.checkpoint: no checkpoints on a cluster (the documented default).
    (plain,) = build_job(xp(), trial())[0]["spec"]["template"]["spec"]["containers"]
    assert c.ENV_CHECKPOINT_DIR not in {e["name"] for e in plain["env"]}


def test_a_checkpoint_volume_must_be_one_of_the_template_s() -> None:
    from trialforge.api.validation import ExperimentInvalid

    with pytest.raises(ExperimentInvalid) as info:
        xp(trial={"checkpoint": {"volume": "ckpt"}})
    (error,) = info.value.errors
    assert error.path == "spec.trial.checkpoint.volume"
    assert "no volume named 'ckpt' in spec.trial.template.spec.volumes" in error.message
    with pytest.raises(ExperimentInvalid) as info:
        xp(trial={"checkpoint": {"volume": "Bad_Name", "mountPath": "relative"}})
    assert {e.path for e in info.value.errors} == {
        "spec.trial.checkpoint.volume",
        "spec.trial.checkpoint.mountPath",
    }


def test_parameters_are_filled_in_command_args_env_labels_and_annotations() -> None:
    job, _ = build_job(xp(), trial())
    pod = job["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert c["command"] == ["python", "train.py", "--lr=0.01"]
    assert c["args"] == ["--opt=adam"]
    env = env_of(c)
    assert env["OPT"]["value"] == "adam"
    assert env["KEEP"]["value"] == "as is"
    assert pod["metadata"]["labels"]["opt"] == "adam"
    assert pod["metadata"]["annotations"]["trialforge.io/kwok-exit-code"] == "adam"


def test_trialforge_environment_and_ingest_token() -> None:
    job, _ = build_job(xp(), trial(attempt=1, name="mnist-3-r1"), "http://op:8080/v1/observations")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    env = env_of(c)
    assert env[contract.ENV_EXPERIMENT]["value"] == "mnist"
    assert env[contract.ENV_TRIAL]["value"] == "mnist-3-r1"
    assert json.loads(env[contract.ENV_PARAMS]["value"]) == {"lr": 0.01, "opt": "adam"}
    assert env[contract.ENV_SEED]["value"] == "1234"
    assert env[contract.ENV_ATTEMPT]["value"] == "1"
    assert env[contract.ENV_WORKERS]["value"] == "1"
    assert env[contract.ENV_INGEST_URL]["value"] == "http://op:8080/v1/observations"
    ref = env[contract.ENV_TOKEN]["valueFrom"]["secretKeyRef"]
    # The Secret of indices 0-999 (retries 0), this trial's own key in it.
    assert ref == {"name": "mnist-tokens-1000-0", "key": "mnist-3-r1"}
    assert job["metadata"]["labels"]["trialforge.io/attempt"] == "1"
    # No ingest URL (ingest off): no token either.
    job, _ = build_job(xp(), trial())
    names = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert contract.ENV_TOKEN not in names and contract.ENV_INGEST_URL not in names
    assert not any(n in names for n in ("MASTER_ADDR", "WORLD_SIZE", "RANK"))


def test_gpus_node_selectors_tolerations_and_priority_pass_through_untouched() -> None:
    experiment = xp()
    before = copy.deepcopy(experiment.spec.trial.template)
    job, _ = build_job(experiment, trial())
    pod = job["spec"]["template"]["spec"]
    src = before["spec"]
    assert pod["nodeSelector"] == src["nodeSelector"]
    assert pod["tolerations"] == src["tolerations"]
    assert pod["priorityClassName"] == "research-high"
    assert pod["containers"][0]["resources"] == src["containers"][0]["resources"]
    assert pod["containers"][0]["image"] == "registry.example/mnist:1.2"
    # The experiment's own template is not modified by building a Job.
    assert experiment.spec.trial.template == before


def test_resource_amounts_written_as_numbers_become_quantity_strings() -> None:
    """`nvidia.com/gpu: 1` is how users write it; the Kubernetes client wants "1"."""
    experiment = xp()
    resources = experiment.spec.trial.template["spec"]["containers"][0]["resources"]
    resources["limits"] = {GPU: 1, "memory": "16Gi"}
    resources["requests"] = {GPU: 1, "cpu": 0.5}
    job, _ = build_job(experiment, trial())
    built = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert built == {"limits": {GPU: "1", "memory": "16Gi"}, "requests": {GPU: "1", "cpu": "0.5"}}
    from kubernetes.client import V1Job

    # The client validates a Job against this model before sending it; with the
    # numbers it raised a ValidationError and no trial of such a spec could start.
    model = V1Job.model_validate(job)
    assert model.spec.template.spec.containers[0].resources.limits[GPU] == "1"


def test_a_queue_suspends_the_job_with_the_kueue_label() -> None:
    job, _ = build_job(xp(queue="team-a"), trial())
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"


def test_several_workers_make_an_indexed_job_and_a_headless_service() -> None:
    job, service = build_job(xp(trial={"workers": 4}), trial(), "http://op/v1/observations")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == 4 and spec["parallelism"] == 4
    assert spec["backoffLimit"] == 0
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == "mnist-3"
    env = env_of(pod["containers"][0])
    assert env["MASTER_ADDR"]["value"] == "mnist-3-0.mnist-3"
    assert env["MASTER_PORT"]["value"] == "29500"
    assert env["WORLD_SIZE"]["value"] == "4"
    assert env["NNODES"]["value"] == "4"
    assert env[contract.ENV_WORKERS]["value"] == "4"
    for var in ("RANK", "NODE_RANK"):
        assert env[var]["valueFrom"]["fieldRef"]["fieldPath"] == COMPLETION_INDEX
    assert service is not None
    assert service["metadata"]["name"] == "mnist-3"
    assert service["metadata"]["ownerReferences"] == job["metadata"]["ownerReferences"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"trialforge.io/trial": "mnist-3"}
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["ports"][0]["port"] == 29500


def test_trialforge_variables_win_over_a_user_variable_of_the_same_name() -> None:
    experiment = xp()
    experiment.spec.trial.template["spec"]["containers"][0]["env"].append(
        {"name": contract.ENV_TRIAL, "value": "spoofed"}
    )
    job, _ = build_job(experiment, trial())
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["value"] for e in env if e["name"] == contract.ENV_TRIAL] == ["mnist-3"]


def test_an_unknown_parameter_placeholder_is_an_error() -> None:
    experiment = xp()
    experiment.spec.trial.template["spec"]["containers"][0]["command"].append("${params.nope}")
    with pytest.raises(KeyError, match="nope"):
        build_job(experiment, trial())


# -- trial_status_from ------------------------------------------------------------------

T0, T1 = "2026-01-01T10:00:00Z", "2026-01-01T10:00:30Z"


def job_with(*conditions: dict[str, Any], suspend: bool = False, gpus: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"name": "mnist-3"},
        "spec": {
            "suspend": suspend,
            "template": {
                "spec": {"containers": [{"name": "trainer", "resources": {"limits": {GPU: gpus}}}]}
            },
        },
        "status": {
            "startTime": T0,
            **({"completionTime": T1} if any(c["type"] == "Complete" for c in conditions) else {}),
            "conditions": [{"status": "True", "lastTransitionTime": T1, **c} for c in conditions],
        },
    }


def pod_with(
    phase: str, exit_code: int | None = None, reason: str | None = None, node: str = "gpu-1"
) -> dict[str, Any]:
    cs: dict[str, Any] = {"name": "trainer", "imageID": "docker-pullable://reg/img@sha256:abc"}
    if exit_code is not None:
        cs["state"] = {"terminated": {"exitCode": exit_code, "reason": reason or "Completed"}}
    else:
        cs["state"] = {"running": {}}
    return {
        "metadata": {"name": "mnist-3-xyz", "creationTimestamp": T0},
        "spec": {"nodeName": node},
        "status": {"phase": phase, "containerStatuses": [cs]},
    }


def running_trial(history: list[tuple[int, float]] | None = None) -> dict[str, Any]:
    t = trial()
    t["status"] = {"phase": "Running", "startTime": T0}
    if history:
        t["status"]["history"] = {"loss": [{"step": s, "value": v} for s, v in history]}
    return t


def test_a_complete_job_succeeds_with_the_objective_from_the_stored_history() -> None:
    spec = xp().spec
    observed = trial_status_from(
        spec,
        running_trial([(1, 0.9), (2, 0.5), (3, 0.25)]),
        job_with({"type": "Complete"}),
        [pod_with("Succeeded", 0)],
    )
    s = observed.status
    assert s["phase"] == "Succeeded" and s["reason"] == "Completed"
    assert s["objective"] == 0.25 and s["values"] == [0.25]
    assert s["completionTime"] == T1
    assert s["exitCode"] == 0
    assert s["node"] == "gpu-1"
    assert s["imageDigest"] == "reg/img@sha256:abc"
    assert s["gpuSeconds"] == 60  # 2 GPUs x 30 s
    assert observed.event is not None and observed.event[1] == "TrialSucceeded"


def test_a_complete_job_without_the_objective_fails_missing_objective() -> None:
    s = trial_status_from(
        xp().spec, running_trial(), job_with({"type": "Complete"}), [pod_with("Succeeded", 0)]
    ).status
    assert s["phase"] == "Failed" and s["reason"] == "MissingObjective"
    assert s["retryable"] is False


def test_a_job_past_its_deadline_is_a_timeout() -> None:
    observed = trial_status_from(
        xp().spec,
        running_trial([(1, 0.5)]),
        job_with({"type": "Failed", "reason": "DeadlineExceeded"}),
        [pod_with("Failed", 143, "Error")],
    )
    s = observed.status
    assert s["phase"] == "Failed" and s["reason"] == "Timeout"
    assert observed.event is not None and observed.event[:2] == ("Warning", "TrialFailed")


def test_a_failed_pod_gives_its_exit_code_not_backoff_limit_exceeded() -> None:
    s = trial_status_from(
        xp().spec,
        running_trial([(1, 0.5)]),
        job_with({"type": "Failed", "reason": "BackoffLimitExceeded"}),
        [pod_with("Failed", 3, "Error")],
    ).status
    assert s["phase"] == "Failed" and s["reason"] == "Error"
    assert s["exitCode"] == 3 and "3" in s["message"]


def test_an_oom_killed_pod_says_so() -> None:
    s = trial_status_from(
        xp().spec,
        running_trial(),
        job_with({"type": "Failed", "reason": "BackoffLimitExceeded"}),
        [pod_with("Failed", 137, "OOMKilled")],
    ).status
    assert s["reason"] == "OOMKilled" and s["exitCode"] == 137


def test_a_failed_job_whose_pods_are_gone_fails_with_the_job_reason() -> None:
    s = trial_status_from(
        xp().spec,
        running_trial([(1, 0.5)]),
        job_with({"type": "Failed", "reason": "BackoffLimitExceeded"}),
        [],
    ).status
    assert s["phase"] == "Failed" and s["reason"] == "BackoffLimitExceeded"


def test_an_unschedulable_pod_keeps_the_trial_pending_unschedulable() -> None:
    t = trial()
    pod = {
        "metadata": {"name": "mnist-3-xyz", "creationTimestamp": T0},
        "spec": {},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
                }
            ],
        },
    }
    job = job_with()
    observed = trial_status_from(xp().spec, t, job, [pod])
    s = observed.status
    assert s["phase"] == "Pending" and s["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in s["message"]
    assert observed.event is not None and observed.event[1] == "TrialUnschedulable"
    # Observing it again changes nothing: no write, no second event.
    t["status"] = dict(s)
    again = trial_status_from(xp().spec, t, job, [pod])
    assert again.status == {} and again.event is None


def test_a_running_pod_makes_the_trial_running_once() -> None:
    t = trial()
    t["status"] = {"phase": "Pending"}
    observed = trial_status_from(xp().spec, t, job_with(), [pod_with("Running")])
    s = observed.status
    assert s["phase"] == "Running" and s["node"] == "gpu-1" and s["startTime"] == T0
    assert observed.event is not None and observed.event[1] == "TrialStarted"


def test_a_pod_that_ended_before_its_job_does_not_send_the_trial_back_to_pending() -> None:
    """The pod is Succeeded a moment before the Job is Complete: no "Starting" again."""
    t = running_trial()
    t["status"]["node"] = "gpu-1"
    t["status"]["imageDigest"] = "reg/img@sha256:abc"
    observed = trial_status_from(xp().spec, t, job_with(), [pod_with("Succeeded", 0)])
    assert observed.status == {} and observed.event is None


def test_running_takes_the_pods_start_time_when_the_jobs_is_not_there_yet() -> None:
    t = trial()
    job = job_with()
    del job["status"]["startTime"]
    pod = pod_with("Running")
    pod["status"]["startTime"] = T1
    s = trial_status_from(xp().spec, t, job, [pod]).status
    assert s["phase"] == "Running" and s["startTime"] == T1  # one write, not a second one


def test_a_trial_without_a_running_pod_needs_no_write_unless_something_holds_it() -> None:
    assert trial_status_from(xp().spec, trial(), None, []).status == {}
    assert trial_status_from(xp().spec, trial(), job_with(), []).status == {}
    # Scheduled, starting: no write of its own (the Running write carries the node).
    assert trial_status_from(xp().spec, trial(), job_with(), [pod_with("Pending")]).status == {}
    # ... but a hold is cleared when the pod gets going.
    held = trial()
    held["status"] = {"phase": "Pending", "reason": "Unschedulable", "message": "no GPUs"}
    s = trial_status_from(xp().spec, held, job_with(), [pod_with("Pending")]).status
    assert s["reason"] == "Starting" and s["message"] == ""


def test_a_suspended_job_waits_for_admission() -> None:
    s = trial_status_from(xp().spec, trial(), job_with(suspend=True), []).status
    assert s["phase"] == "Pending" and s["reason"] == "WaitingForAdmission"


def test_a_trial_that_has_ended_is_left_alone() -> None:
    t = running_trial()
    t["status"]["phase"] = "Pruned"
    observed = trial_status_from(xp().spec, t, job_with({"type": "Complete"}), [])
    assert observed.status == {} and observed.event is None


def test_token_secrets_are_shared_by_blocks_of_trials_sized_by_retries() -> None:
    from trialforge.kube import names

    assert names.token_secret_ref("xp", "xp-1234", 1234, 0) == {
        "name": "xp-tokens-1000-1",
        "key": "xp-1234",
    }
    # Every attempt's key is in the block: fewer indices per Secret with more retries.
    assert names.token_block(3) == 250
    assert names.token_secret_name("xp", 260, 3) == "xp-tokens-250-1"
    assert names.token_block(10_000) == 1


URL = "http://op.trialforge-system.svc:8080/v1/observations"


IMAGE = "ghcr.io/trialforge/operator:0.1.0"


def pod(experiment: Any = None, **kw: Any) -> dict[str, Any]:
    job, _ = build_job(experiment or xp(), trial(), URL, IMAGE, **kw)
    return job["spec"]["template"]["spec"]


def collector_of(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """The collector sidecar: the last init container, after the entrypoint's installer."""
    *_, sidecar = pod_spec["initContainers"]
    assert sidecar["name"] == COLLECTOR_NAME
    return sidecar


def test_the_collector_is_a_native_sidecar_with_the_token_from_the_secret() -> None:
    spec = pod()
    sidecar = collector_of(spec)
    assert sidecar["restartPolicy"] == "Always"  # native sidecar (Kubernetes >= 1.29)
    assert sidecar["image"] == IMAGE and sidecar["command"] == list(c.COLLECTOR_COMMAND)
    env = env_of(sidecar)
    assert env[c.ENV_TOKEN]["valueFrom"]["secretKeyRef"] == {
        "name": "mnist-tokens-1000-0",
        "key": "mnist-3",
    }
    assert "value" not in env[c.ENV_TOKEN]  # never a plain value in the pod spec
    assert env[c.ENV_NAMESPACE]["valueFrom"]["fieldRef"]["fieldPath"] == ("metadata.namespace")
    assert env[c.ENV_TRIAL]["value"] == "mnist-3"
    assert env[c.ENV_INGEST_URL]["value"] == URL
    assert env[c.ENV_METRICS_SOURCE]["value"] == "stdout"
    assert env[c.ENV_METRICS_FORMAT]["value"] == "json"
    assert c.ENV_RANK not in env and "startupProbe" not in sidecar
    assert sidecar["resources"]["limits"]["memory"]
    assert {"name": "trialforge-shared", "emptyDir": {}} in spec["volumes"]
    assert sidecar["volumeMounts"] == [{"name": "trialforge-shared", "mountPath": c.SHARED_DIR}]


def test_a_stdout_trainer_runs_under_the_entrypoint_the_installer_puts_in_the_shared_volume() -> (
    None
):
    spec = pod()
    (trainer,) = spec["containers"]
    assert trainer["command"] == [
        f"{c.SHARED_DIR}/bin/trialforge-entrypoint",
        "--",
        "python",
        "train.py",
        "--lr=0.01",
        "--opt=adam",  # args are folded into the command
    ]
    assert "args" not in trainer
    env = env_of(trainer)
    assert env[c.ENV_SHARED_DIR]["value"] == c.SHARED_DIR
    assert env["OPT"]["value"] == "adam"  # the user's env is kept
    assert {"name": "trialforge-shared", "mountPath": c.SHARED_DIR} in trainer["volumeMounts"]
    # The installer is an ordinary init container: it has ended before the collector
    # and the trainer start.
    installer, sidecar = spec["initContainers"]
    assert installer["name"] == ENTRYPOINT_INSTALLER_NAME and "restartPolicy" not in installer
    assert installer["image"] == IMAGE
    assert installer["command"] == ["trialforge-entrypoint", "install", f"{c.SHARED_DIR}/bin"]
    assert installer["volumeMounts"] == [{"name": "trialforge-shared", "mountPath": c.SHARED_DIR}]
    assert installer["resources"]["limits"]["memory"]
    assert sidecar["name"] == COLLECTOR_NAME


@pytest.mark.parametrize(
    "metrics",
    [
        {"source": "push"},
        {"source": "file", "path": "m.log"},
        {"source": "tensorboard", "path": "tb"},
    ],
)
def test_other_sources_leave_the_trainer_command_as_the_user_wrote_it(
    metrics: dict[str, Any],
) -> None:
    spec = pod(xp(trial={"metrics": metrics}))
    (trainer,) = spec["containers"]
    assert trainer["command"] == ["python", "train.py", "--lr=0.01"]
    assert trainer["args"] == ["--opt=adam"]
    assert [i["name"] for i in spec["initContainers"]] == [COLLECTOR_NAME]


def test_push_source_gets_a_report_url_and_a_startup_probe() -> None:
    spec = pod(xp(trial={"metrics": {"source": "push"}}))
    sidecar = collector_of(spec)
    assert sidecar["startupProbe"]["httpGet"]["port"] == c.PUSH_PORT
    # the kubelet probes from the node: the pod's IP (no host), where the server listens
    assert "host" not in sidecar["startupProbe"]["httpGet"]
    assert env_of(sidecar)[c.ENV_PUSH_LISTEN]["value"] == c.POD_PUSH_LISTEN
    env = env_of(spec["containers"][0])
    assert env[c.ENV_REPORT_URL]["value"] == f"http://127.0.0.1:{c.PUSH_PORT}/report"


def test_an_absolute_metrics_path_gets_a_shared_folder_and_regex_its_pattern() -> None:
    metrics = {"source": "file", "path": "/logs/train.log", "format": "regex",
               "pattern": r"loss=(?P<loss>\S+)"}  # fmt: skip
    spec = pod(xp(trial={"metrics": metrics}))
    sidecar = collector_of(spec)
    env = env_of(sidecar)
    assert env[c.ENV_METRICS_PATH]["value"] == "/logs/train.log"
    assert env[c.ENV_METRICS_PATTERN]["value"] == r"loss=(?P<loss>\S+)"
    mount = {"name": "trialforge-metrics", "mountPath": "/logs"}
    assert mount in sidecar["volumeMounts"] and mount in spec["containers"][0]["volumeMounts"]
    # A relative path lives on the shared volume.
    spec = pod(xp(trial={"metrics": {"source": "tensorboard", "path": "tb"}}))
    env = env_of(collector_of(spec))
    assert env[c.ENV_METRICS_PATH]["value"] == f"{c.SHARED_DIR}/tb"
    assert len(spec["volumes"]) == 1


def test_several_workers_each_have_a_collector_that_knows_its_rank() -> None:
    spec = pod(xp(trial={"workers": 2}))
    env = env_of(collector_of(spec))
    assert "job-completion-index" in env[c.ENV_RANK]["valueFrom"]["fieldRef"]["fieldPath"]


def test_no_ingest_or_no_image_means_no_sidecar_and_the_command_untouched() -> None:
    for args in ((None, IMAGE), (URL, None)):
        job, _ = build_job(xp(), trial(), *args)
        spec = job["spec"]["template"]["spec"]
        assert "initContainers" not in spec and "volumes" not in spec
        assert spec["containers"][0]["command"] == ["python", "train.py", "--lr=0.01"]
