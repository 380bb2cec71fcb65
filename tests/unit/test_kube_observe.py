"""kube/observe.py: a Trial's status from its Job and pods (more in test_kube_jobs.py)."""

from __future__ import annotations

from tests.unit.test_kube_jobs import job_with, pod_with, running_trial, trial, xp
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


def waiting_pod(reason: str, message: str = "") -> dict:
    pod = pod_with("Pending")
    pod["status"]["containerStatuses"][0]["state"] = {
        "waiting": {"reason": reason, "message": message}
    }
    return pod


def test_an_image_that_may_not_be_pulled_fails_the_trial_at_once_with_the_reason() -> None:
    spec = xp().spec
    pod = waiting_pod(
        "ErrImageNeverPull",
        'Container image "reg/missing:1" is not present with pull policy of Never',
    )
    trial = running_trial()
    trial["status"]["phase"] = "Pending"
    observed = trial_status_from(spec, trial, job_with(), [pod])
    s = observed.status
    assert s["phase"] == "Failed" and s["reason"] == "ErrImageNeverPull", s
    assert "reg/missing:1" in s["message"] and "container trainer" in s["message"]
    assert observed.event is not None and observed.event[1] == "TrialFailed"


def test_a_pull_the_kubelet_retries_shows_on_the_pending_trial() -> None:
    spec = xp().spec
    trial = running_trial()
    trial["status"]["phase"] = "Pending"
    observed = trial_status_from(
        spec, trial, job_with(), [waiting_pod("ImagePullBackOff", "Back-off pulling image")]
    )
    s = observed.status
    assert s.get("phase", "Pending") == "Pending" and s["reason"] == "ImagePullBackOff"
    assert "Back-off pulling image" in s["message"]


def test_a_queued_job_waits_with_the_workloads_own_reason() -> None:
    from tests.unit.test_kube_kueue import PENDING_MSG, cond, workload

    spec = xp(queue="team-a").spec
    waiting = workload("u", cond("QuotaReserved", "False", "Pending", PENDING_MSG))
    observed = trial_status_from(spec, trial(), job_with(suspend=True), [], workload=waiting)
    s = observed.status
    assert s["phase"] == "Pending" and s["reason"] == "WaitingForAdmission"
    assert s["message"] == f"Kueue: Pending: {PENDING_MSG}"
    # Preempted by Kueue after it ran: it waits again, and says why.
    preempted = workload("u", cond("Evicted", "True", "Preempted", "Preempted to accommodate"))
    again = trial_status_from(
        spec, running_trial(), job_with(suspend=True), [], workload=preempted
    ).status
    assert again["phase"] == "Pending" and again["reason"] == "WaitingForAdmission"
    assert again["message"] == "Kueue: Preempted: Preempted to accommodate"


def test_a_queued_job_paused_by_us_says_paused_not_waiting() -> None:
    from tests.unit.test_kube_kueue import cond, workload

    spec = xp(queue="team-a", suspend=True, suspendPolicy="Pause").spec
    job = job_with(suspend=True)
    job["metadata"]["annotations"] = {"trialforge.io/paused": "true"}
    wl = workload("u", cond("Evicted", "True", "Deactivated", "deactivated"), active=False)
    s = trial_status_from(spec, running_trial(), job, [], workload=wl).status
    assert s["phase"] == "Pending" and s["reason"] == "Paused"
