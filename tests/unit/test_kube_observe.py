"""kube/observe.py: a Trial's status from its Job and pods (more in test_kube_jobs.py)."""

from __future__ import annotations

from tests.unit.test_kube_jobs import job_with, pod_with, running_trial, xp
from trialforge.kube.observe import trial_status_from


def test_a_finished_pod_gives_the_artifact_and_the_gpu_model() -> None:
    spec = xp().spec
    pod = pod_with("Succeeded", 0)
    pod["spec"]["nodeSelector"] = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    term["message"] = '{"artifact_uri": "s3://models/mnist-3/model.pt"}\n'
    observed = trial_status_from(
        spec, running_trial([(1, 0.5)]), job_with({"type": "Complete"}), [pod]
    )
    s = observed.status
    assert s["artifactUri"] == "s3://models/mnist-3/model.pt"
    assert s["gpuType"] == "NVIDIA-H100-80GB-HBM3"
    assert s["node"] == "gpu-1" and s["imageDigest"] == "reg/img@sha256:abc"
