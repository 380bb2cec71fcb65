"""The collector sidecar in the Job's pods (kube/jobs.py add_collector)."""

from __future__ import annotations

from typing import Any

from tests.unit.test_jobs import env_of, trial, xp
from trialforge.kube.jobs import build_job
from trialforge.metrics import contract as c

URL = "http://op.trialforge-system.svc:8080/v1/observations"
IMAGE = "ghcr.io/trialforge/operator:0.1.0"


def pod(experiment: Any = None, **kw: Any) -> dict[str, Any]:
    job, _ = build_job(experiment or xp(), trial(), URL, IMAGE, **kw)
    return job["spec"]["template"]["spec"]


def test_the_collector_is_a_native_sidecar_with_the_token_from_the_secret() -> None:
    spec = pod()
    (sidecar,) = spec["initContainers"]
    assert sidecar["name"] == "trialforge-collector"
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


def test_the_trainer_command_is_wrapped_so_output_and_exit_code_reach_the_collector() -> None:
    spec = pod()
    (trainer,) = spec["containers"]
    assert trainer["command"] == [
        "/bin/sh",
        "-c",
        c.WRAPPER,
        c.WRAPPER_NAME,
        "python",
        "train.py",
        "--lr=0.01",
        "--opt=adam",  # args are folded into the wrapped command
    ]
    assert "args" not in trainer
    env = env_of(trainer)
    assert env[c.ENV_SHARED_DIR]["value"] == c.SHARED_DIR
    assert env["OPT"]["value"] == "adam"  # the user's env is kept
    assert {"name": "trialforge-shared", "mountPath": c.SHARED_DIR} in trainer["volumeMounts"]


def test_push_source_gets_a_report_url_and_a_startup_probe() -> None:
    spec = pod(xp(trial={"metrics": {"source": "push"}}))
    (sidecar,) = spec["initContainers"]
    assert sidecar["startupProbe"]["httpGet"]["port"] == c.PUSH_PORT
    env = env_of(spec["containers"][0])
    assert env[c.ENV_REPORT_URL]["value"] == f"http://127.0.0.1:{c.PUSH_PORT}/report"


def test_an_absolute_metrics_path_gets_a_shared_folder_and_regex_its_pattern() -> None:
    metrics = {"source": "file", "path": "/logs/train.log", "format": "regex",
               "pattern": r"loss=(?P<loss>\S+)"}  # fmt: skip
    spec = pod(xp(trial={"metrics": metrics}))
    (sidecar,) = spec["initContainers"]
    env = env_of(sidecar)
    assert env[c.ENV_METRICS_PATH]["value"] == "/logs/train.log"
    assert env[c.ENV_METRICS_PATTERN]["value"] == r"loss=(?P<loss>\S+)"
    mount = {"name": "trialforge-metrics", "mountPath": "/logs"}
    assert mount in sidecar["volumeMounts"] and mount in spec["containers"][0]["volumeMounts"]
    # A relative path lives on the shared volume.
    spec = pod(xp(trial={"metrics": {"source": "tensorboard", "path": "tb"}}))
    env = env_of(spec["initContainers"][0])
    assert env[c.ENV_METRICS_PATH]["value"] == f"{c.SHARED_DIR}/tb"
    assert len(spec["volumes"]) == 1


def test_several_workers_each_have_a_collector_that_knows_its_rank() -> None:
    spec = pod(xp(trial={"workers": 2}))
    env = env_of(spec["initContainers"][0])
    assert "job-completion-index" in env[c.ENV_RANK]["valueFrom"]["fieldRef"]["fieldPath"]


def test_no_ingest_or_no_image_means_no_sidecar_and_the_command_untouched() -> None:
    for args in ((None, IMAGE), (URL, None)):
        job, _ = build_job(xp(), trial(), *args)
        spec = job["spec"]["template"]["spec"]
        assert "initContainers" not in spec and "volumes" not in spec
        assert spec["containers"][0]["command"] == ["python", "train.py", "--lr=0.01"]
