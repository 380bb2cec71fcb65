"""The operator against the real local control plane: Experiments become Trials
become Jobs, and every result is written back (issue 5).

The operator runs as a real subprocess (`trialforge operator`); kwok plays the
nodes and scripts how each pod ends (e2e/kwok/stages.yaml); a Reporter thread
plays the metrics collector, POSTing observations to the operator's ingest
endpoint exactly as the sidecar will. No mocks anywhere.
"""

from __future__ import annotations

import base64
import itertools
import math
import re
import time
import urllib.request
from datetime import datetime
from typing import Any

import pytest
from clusterlib import KubeCluster
from kubernetes.client.rest import ApiException
from operatorlib import (
    GROUP,
    LABEL_EXPERIMENT,
    Cluster,
    OperatorProcess,
    Reporter,
    batch,
    condition,
    experiment,
    post,
    sampling,
    token,
)

from trialforge.api.status import ExperimentStatus

pytestmark = pytest.mark.cluster

DIGEST = re.compile(r"^[^@]+@sha256:[0-9a-f]{64}$")


# -- fixtures ---------------------------------------------------------------------------


# -- what the "trainer" reports ---------------------------------------------------------


def loss_of(trial: dict[str, Any]) -> float:
    """Each trial's final loss, from its parameters: deterministic."""
    x = float(trial["spec"]["parameters"]["x"])
    return round((x - 0.3) ** 2, 6)


def good_curve(trial: dict[str, Any]) -> list[tuple[int, dict[str, float]]]:
    v = loss_of(trial)
    return [(1, {"loss": v + 0.2}), (2, {"loss": v + 0.1}), (3, {"loss": v})]


def wait_finished(kube: Cluster, name: str, timeout: float = 90) -> dict[str, Any]:
    return kube.until(lambda: kube.finished(name), timeout, f"experiment {name} to finish")


def index_of(trial: dict[str, Any]) -> int:
    return int(trial["spec"]["index"])


# -- 1. parallelism, replacement, budget, status ----------------------------------------


def test_trials_fill_parallelism_and_respect_the_budget(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    name = "budget"
    kube.create(experiment(name, max_trials=5, parallelism=2, run_seconds="3"))
    peak = {"jobs": 0, "trials": 0}
    seen_two = []

    def sample() -> None:
        active = len(kube.active_jobs(name))
        peak["jobs"] = max(peak["jobs"], active)
        live = [t for t in kube.trials(name) if (t.get("status") or {}).get("phase") in
                (None, "Pending", "Running")]  # fmt: skip
        peak["trials"] = max(peak["trials"], len(live))
        if active == 2:
            seen_two.append(time.monotonic())

    with (
        Reporter(cluster, namespace, operator.port, good_curve) as reporter,
        sampling(sample) as sample_errors,
    ):
        kube.until(lambda: len(kube.active_jobs(name)) == 2, 30, "two Jobs running at once")
        status = wait_finished(kube, name, 90)
    kube.check(not sample_errors, f"sampling failed: {sample_errors}")
    kube.check(not reporter.errors, f"reporter errors: {reporter.errors}")

    kube.check(peak["jobs"] <= 2, f"{peak['jobs']} Jobs were active at once; parallelism is 2")
    kube.check(peak["trials"] <= 2, f"{peak['trials']} Trials were live at once")
    kube.check(seen_two, "parallelism 2 was never reached")

    trials = kube.trials(name)
    names = [t["metadata"]["name"] for t in trials]
    kube.check(sorted(names) == [f"{name}-{i}" for i in range(5)], f"trials: {names}")
    kube.check(len(kube.jobs(name)) == 5, "one Job per trial")

    kube.check(status["phase"] == "Succeeded", f"phase {status['phase']}")
    kube.check(status["reason"] == "BudgetExhausted", f"reason {status['reason']}")
    counts = status["trials"]
    kube.check(
        counts["succeeded"] == 5 and counts["total"] == 5 and counts["running"] == 0
        and counts["pending"] == 0 and counts["failed"] == 0,
        f"counts {counts}",
    )  # fmt: skip
    best = min(trials, key=loss_of)
    kube.check(status["best"]["trial"] == best["metadata"]["name"], f"best {status['best']}")
    kube.check(status["bestValue"] == pytest.approx(loss_of(best)), f"bestValue {status}")
    kube.check(status["best"]["parameters"] == best["spec"]["parameters"], "best parameters")
    kube.check(status.get("startTime") and status.get("completionTime"), "experiment times")
    kube.check(status.get("observedGeneration") == 1, "observedGeneration")
    kube.check(status.get("gpuSeconds", 0) > 0, f"gpuSeconds {status.get('gpuSeconds')}")
    # The one status shape (engine.status), the same a local run's state.json has
    # (tests/unit/test_local_runtime.py checks that one).
    ExperimentStatus.model_validate(status)
    best_keys = {"trial", "parameters", "value", "values", "config", "runs"}
    kube.check(set(status["best"]) == best_keys, f"best {status['best']}")
    budget_cond = condition(status, "BudgetExhausted")
    kube.check(budget_cond and budget_cond["status"] == "True", f"conditions {status}")
    ok_cond = condition(status, "Succeeded")
    kube.check(ok_cond and ok_cond["status"] == "True", f"conditions {status}")

    for t in trials:
        ts = t["status"]
        tname = t["metadata"]["name"]
        kube.check(ts["phase"] == "Succeeded", f"{tname}: {ts}")
        kube.check(ts["objective"] == pytest.approx(loss_of(t)), f"{tname} objective {ts}")
        kube.check(ts.get("startTime") and ts.get("completionTime"), f"{tname} times {ts}")
        kube.check(str(ts.get("node", "")).startswith("kwok-gpu-"), f"{tname} node {ts}")
        kube.check(DIGEST.match(ts.get("imageDigest") or ""), f"{tname} imageDigest {ts}")
        kube.check(ts.get("gpuSeconds", 0) > 0, f"{tname} gpuSeconds {ts}")
        kube.check(ts.get("lastSequence") == 3, f"{tname} lastSequence {ts}")
        kube.check(len(ts["history"]["loss"]) == 3, f"{tname} history {ts}")
        owner = t["metadata"]["ownerReferences"][0]
        kube.check(owner["kind"] == "Experiment" and owner["name"] == name, "trial owner")
        for code, answer in reporter.answers[tname]:
            kube.check(code == 200, f"ingest answered {code} {answer} for {tname}")

    # kubectl's printer columns show phase and best at a glance
    out = cluster.kubectl("-n", namespace, "get", "xp", name).stdout
    header, row = out.splitlines()[:2]
    for column in ("PHASE", "PROGRESS", "BEST", "RUNNING", "SUCCEEDED", "FAILED"):
        kube.check(column in header.split(), f"column {column} missing: {out}")
    kube.check(row.split()[1] == "Succeeded", f"row: {out}")
    kube.check(row.split()[2] == "5/5", f"progress (ended/planned): {out}")
    kube.check(float(row.split()[3]) == pytest.approx(loss_of(best)), f"best value: {out}")
    out = cluster.kubectl("-n", namespace, "get", "xp", name, "-o", "wide").stdout
    header, row = out.splitlines()[:2]
    kube.check("BEST-TRIAL" in header and "REASON" in header, f"wide columns: {out}")
    kube.check(best["metadata"]["name"] in row.split(), f"best trial: {out}")
    kube.check("BudgetExhausted" in row.split(), f"reason: {out}")
    out = cluster.kubectl("-n", namespace, "get", "trials").stdout
    kube.check("PHASE" in out and "OBJECTIVE" in out, out)
    kube.check(out.count("Succeeded") == 5, out)
    out = cluster.kubectl("-n", namespace, "get", "trials", "-o", "wide").stdout
    kube.check("NODE" in out and out.count("kwok-gpu-") == 5, out)

    reasons = {e.reason for e in kube.events()}
    for reason in ("TrialStarted", "TrialSucceeded", "BudgetExhausted"):
        kube.check(reason in reasons, f"no {reason} event; got {sorted(reasons)}")


# -- 2. failures, retries, maxFailedTrials ----------------------------------------------


def test_failures_are_retried_counted_and_fail_the_experiment(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    name = "failing"
    kube.create(
        experiment(
            name,
            max_trials=4,
            parallelism=1,
            retries=1,
            max_failed=1,
            run_seconds="1",
            annotations={"trialforge.io/kwok-exit-code": "3"},
        )
    )
    status = wait_finished(kube, name, 90)
    trials = {t["metadata"]["name"]: t for t in kube.trials(name)}
    kube.check(
        sorted(trials) == [f"{name}-0", f"{name}-0-r1", f"{name}-1", f"{name}-1-r1"],
        f"trials {sorted(trials)}",
    )
    for tname, t in trials.items():
        ts = t["status"]
        kube.check(ts["phase"] == "Failed", f"{tname}: {ts}")
        kube.check(ts.get("exitCode") == 3, f"{tname} exitCode: {ts}")
        kube.check(ts.get("reason") == "Error", f"{tname} reason: {ts}")
        kube.check("3" in (ts.get("message") or ""), f"{tname} message: {ts}")
    kube.check(trials[f"{name}-0-r1"]["spec"]["attempt"] == 1, "attempt of the retry")
    kube.check(
        trials[f"{name}-0-r1"]["spec"]["parameters"] == trials[f"{name}-0"]["spec"]["parameters"],
        "a retry runs the same configuration",
    )
    kube.check(status["phase"] == "Failed", f"phase: {status}")
    kube.check(status["reason"] == "TooManyFailures", f"reason: {status}")
    counts = status["trials"]
    kube.check(counts["retried"] == 2 and counts["failed"] == 2, f"counts {counts}")
    failed = condition(status, "Failed")
    kube.check(
        failed and failed["status"] == "True" and failed["reason"] == "TooManyFailures",
        f"Failed condition: {status.get('conditions')}",
    )
    kube.check("maxFailedTrials" in failed["message"], f"message says why: {failed}")
    # No new configuration after the experiment failed.
    time.sleep(2)
    kube.check(len(kube.trials(name)) == 4, "a trial was created after the experiment failed")
    reasons = {e.reason for e in kube.events()}
    for reason in ("TrialFailed", "TrialRetried", "TooManyFailures"):
        kube.check(reason in reasons, f"no {reason} event; got {sorted(reasons)}")


# -- 3. unschedulable -------------------------------------------------------------------


def test_a_trial_needing_more_gpus_than_any_node_stays_pending_unschedulable(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    name = "toobig"
    kube.create(experiment(name, max_trials=1, gpus=64))
    trial = f"{name}-0"

    def unschedulable() -> dict[str, Any] | None:
        ts = next((t.get("status") or {} for t in kube.trials(name)), {})
        return ts if ts.get("reason") == "Unschedulable" else None

    ts = kube.until(unschedulable, 45, f"{trial} to say Unschedulable")
    kube.check(ts["phase"] == "Pending", f"{ts}")
    kube.check("nvidia.com/gpu" in (ts.get("message") or ""), f"message names the GPUs: {ts}")
    pods = kube.pods(name)
    kube.check(len(pods) == 1 and pods[0].status.phase == "Pending", "the pod stays Pending")
    kube.check(
        any(e.reason == "TrialUnschedulable" for e in kube.events()), "TrialUnschedulable event"
    )
    status = kube.experiment(name)["status"]
    kube.check(status["trials"]["pending"] == 1, f"counts {status['trials']}")


# -- 4. multi-node shape ----------------------------------------------------------------


def _env(container: Any) -> dict[str, Any]:
    return {e.name: e for e in container.env or []}


def test_multi_node_job_and_service_have_the_torchrun_shape(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    name = "ddp"
    kube.create(experiment(name, max_trials=1, workers=2, run_seconds="60", timeout="10m"))
    trial = f"{name}-0"
    job = kube.until(lambda: next(iter(kube.jobs(name)), None), 30, "the Job")
    kube.check(job.metadata.name == trial, f"Job name {job.metadata.name}")
    spec = job.spec
    kube.check(spec.completion_mode == "Indexed", f"completionMode {spec.completion_mode}")
    kube.check(spec.completions == 2 and spec.parallelism == 2, "completions = parallelism = 2")
    kube.check(spec.backoff_limit == 0, f"backoffLimit {spec.backoff_limit}")
    kube.check(spec.active_deadline_seconds == 600, f"deadline {spec.active_deadline_seconds}")
    labels = job.metadata.labels
    kube.check(labels[LABEL_EXPERIMENT] == name and labels[f"{GROUP}/trial"] == trial, f"{labels}")
    owner = job.metadata.owner_references[0]
    kube.check(owner.kind == "Trial" and owner.name == trial and owner.controller, "Job owner")
    pod = spec.template.spec
    kube.check(pod.subdomain == trial, f"subdomain {pod.subdomain}")
    kube.check(pod.restart_policy == "Never", "restartPolicy")
    (trainer,) = pod.containers
    env = _env(trainer)
    kube.check(env["MASTER_ADDR"].value == f"{trial}-0.{trial}", "MASTER_ADDR")
    kube.check(env["MASTER_PORT"].value == "29500", "MASTER_PORT")
    kube.check(env["WORLD_SIZE"].value == "2" and env["NNODES"].value == "2", "WORLD_SIZE/NNODES")
    for var in ("RANK", "NODE_RANK"):
        ref = env[var].value_from.field_ref.field_path
        kube.check(
            ref == "metadata.annotations['batch.kubernetes.io/job-completion-index']",
            f"{var} from {ref}",
        )
    kube.check(env["TRIALFORGE_TRIAL"].value == trial, "TRIALFORGE_TRIAL")
    kube.check(env["TRIALFORGE_WORKERS"].value == "2", "TRIALFORGE_WORKERS")
    kube.check(env["TRIALFORGE_INGEST_URL"].value == operator.ingest_url, "ingest URL")
    ref = env["TRIALFORGE_TOKEN"].value_from.secret_key_ref
    secret = kube.core.read_namespaced_secret(ref.name, namespace)
    kube.check(
        base64.b64decode(secret.data[ref.key]).decode() == token(operator.key, namespace, trial),
        "the token Secret holds the trial's ingest token",
    )
    kube.check(trainer.resources.limits["nvidia.com/gpu"] == "1", "GPU limit untouched")

    svc = kube.core.read_namespaced_service(trial, namespace)
    kube.check(svc.spec.cluster_ip == "None", f"headless: clusterIP {svc.spec.cluster_ip}")
    kube.check(svc.spec.selector == {f"{GROUP}/trial": trial}, f"selector {svc.spec.selector}")
    kube.check(svc.metadata.owner_references[0].name == trial, "Service owned by the Trial")

    # The Job controller makes one pod per index, each with hostname <trial>-<i>.
    pods = kube.until(
        lambda: (p := kube.pods(name)) and len(p) == 2 and p, 30, "two pods of the Indexed Job"
    )
    hosts = sorted((p.spec.hostname, p.spec.subdomain) for p in pods)
    kube.check(hosts == [(f"{trial}-0", trial), (f"{trial}-1", trial)], f"pods {hosts}")
    indices = sorted(p.metadata.annotations["batch.kubernetes.io/job-completion-index"]
                     for p in pods)  # fmt: skip
    kube.check(indices == ["0", "1"], f"completion indices {indices}")
    kube.until(
        lambda: (kube.trial(trial).get("status") or {}).get("phase") == "Running",
        30,
        "the multi-node trial Running",
    )


# -- 5. Kueue ---------------------------------------------------------------------------


def test_a_queued_job_is_created_suspended_for_kueue(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    name = "queued"
    kube.create(experiment(name, max_trials=2, parallelism=2, queue="team-a"))
    jobs = kube.until(lambda: len(j := kube.jobs(name)) == 2 and j, 30, "two Jobs")
    for job in jobs:
        kube.check(job.spec.suspend is True, f"{job.metadata.name} is not suspended")
        kube.check(
            job.metadata.labels.get("kueue.x-k8s.io/queue-name") == "team-a",
            f"{job.metadata.name} labels {job.metadata.labels}",
        )

    def waiting() -> bool:
        return all(
            (t.get("status") or {}).get("reason") == "WaitingForAdmission"
            for t in kube.trials(name)
        )

    kube.until(waiting, 30, "Trials to say WaitingForAdmission")
    # No Kueue here: nothing admits them. The operator, the one thing here that could
    # unsuspend a Job, looks again every resync: wait until it has, then check.
    operator.wait_reconciles()
    kube.check(all(j.spec.suspend for j in kube.jobs(name)), "a Job got unsuspended")
    kube.check(not kube.pods(name), "a suspended Job has pods")
    for t in kube.trials(name):
        kube.check(t["status"]["phase"] == "Pending", f"{t['metadata']['name']}: {t['status']}")


# -- 6. SIGKILL and restart -------------------------------------------------------------


def test_operator_killed_mid_run_and_restarted_finishes_exactly_the_budget(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    name = "crash"
    kube.create(experiment(name, max_trials=5, parallelism=2, run_seconds="4"))
    uids: dict[str, set[str]] = {}

    def sample() -> None:
        for t in kube.trials(name):
            uids.setdefault(t["metadata"]["name"], set()).add(t["metadata"]["uid"])
        for j in kube.jobs(name):
            uids.setdefault("job/" + j.metadata.name, set()).add(j.metadata.uid)

    with (
        Reporter(cluster, namespace, operator.port, good_curve) as reporter,
        sampling(sample, every=0.1),
    ):
        # Mid-run: the first trials ended and their replacements were just decided.
        kube.until(lambda: len(kube.trials(name)) >= 3, 45, "a third trial")
        operator.kill()
        kube.check(not operator.alive, "the operator survived SIGKILL")
        operator.start()  # same identity: a restarted container holds the lease at once
        status = wait_finished(kube, name, 90)
    trials = kube.trials(name)
    names = [t["metadata"]["name"] for t in trials]
    indices = [index_of(t) for t in trials]
    kube.check(sorted(names) == [f"{name}-{i}" for i in range(5)], f"trials {names}")
    kube.check(sorted(indices) == list(range(5)), f"indices {indices}")
    kube.check(status["phase"] == "Succeeded", f"status {status}")
    kube.check(
        status["trials"]["succeeded"] == 5,
        f"counts {status['trials']}; reporter: {reporter.answers}",
    )
    twice = {k: v for k, v in uids.items() if len(v) > 1}
    kube.check(not twice, f"objects created twice (a trial re-run): {twice}")
    kube.check(len(kube.jobs(name)) == 5, "one Job per trial")
    kube.check(not reporter.errors, f"reporter errors: {reporter.errors}")


# -- 7. two operators ---------------------------------------------------------------------


def _reconciles(op: OperatorProcess) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(r"^trialforge_reconcile_duration_seconds_count (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_two_operators_create_each_trial_once(
    cluster: KubeCluster,
    namespace: str,
    operator: OperatorProcess,
    kube: Cluster,
    tmp_path: Any,
) -> None:
    second = OperatorProcess(
        cluster.kubeconfig, namespace, tmp_path / "operator-b.log", identity=f"op-b-{namespace}"
    )
    try:
        second.start(wait_leader=False)
        name = "ha"
        kube.create(experiment(name, max_trials=4, parallelism=2, run_seconds="2"))
        uids: dict[str, set[str]] = {}

        def sample() -> None:
            for t in kube.trials(name):
                uids.setdefault(t["metadata"]["name"], set()).add(t["metadata"]["uid"])

        with (
            Reporter(cluster, namespace, operator.port, good_curve),
            sampling(sample, every=0.1),
        ):
            status = wait_finished(kube, name, 90)
        trials = kube.trials(name)
        indices = sorted(index_of(t) for t in trials)
        kube.check(indices == [0, 1, 2, 3], f"indices {indices}")
        kube.check(len(trials) == 4, f"{len(trials)} trials")
        kube.check(all(len(v) == 1 for v in uids.values()), f"a trial was created twice: {uids}")
        kube.check(status["phase"] == "Succeeded", f"status {status}")
        lease = kube.coordination.read_namespaced_lease("trialforge-operator", namespace)
        kube.check(
            lease.spec.holder_identity == operator.identity, f"holder {lease.spec.holder_identity}"
        )
        kube.check((operator.healthz() or {}).get("leader") is True, "the first is leader")
        kube.check((second.healthz() or {}).get("leader") is False, "the second is standby")
        kube.check(_reconciles(operator) > 0, "the leader reconciled")
        kube.check(
            _reconciles(second) == 0,
            f"the standby reconciled too:\n{second.log_tail()}",
        )
    finally:
        second.stop()
        second.kill()


# -- 8. invalid spec --------------------------------------------------------------------


def test_an_invalid_spec_gives_an_event_and_condition_and_harms_no_running_trial(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    name = "edited"
    xp = experiment(name, max_trials=3, parallelism=2, run_seconds="12")
    kube.create(xp)
    container = xp["spec"]["trial"]["template"]["spec"]["containers"][0]

    with Reporter(cluster, namespace, operator.port, good_curve):

        def running() -> list[dict[str, Any]] | None:
            ts = kube.trials(name)
            ok = len(ts) == 2 and all((t.get("status") or {}).get("phase") == "Running" for t in ts)
            return ts if ok else None

        before = kube.until(running, 30, "two Running trials")
        trial_uids = {t["metadata"]["name"]: t["metadata"]["uid"] for t in before}
        job_uids = {j.metadata.name: j.metadata.uid for j in kube.jobs(name)}

        bad = dict(container, command=["python", "train.py", "--x=${params.nope}"])
        kube.patch_experiment(
            name, {"spec": {"trial": {"template": {"spec": {"containers": [bad]}}}}}
        )

        def refused() -> dict[str, Any] | None:
            st = (kube.experiment(name) or {}).get("status") or {}
            c = condition(st, "SpecValid")
            return st if c and c["status"] == "False" else None

        status = kube.until(refused, 30, "condition SpecValid False")
        spec_valid = condition(status, "SpecValid")
        kube.check(spec_valid["reason"] == "InvalidSpec", f"{spec_valid}")
        kube.check("nope" in spec_valid["message"], f"the message names the problem: {spec_valid}")
        kube.check(status.get("observedGeneration") == 2, f"observedGeneration {status}")
        event = kube.until(lambda: kube.events("InvalidSpec"), 15, "an InvalidSpec Event")[0]
        kube.check("nope" in event.message and event.type == "Warning", f"event {event}")

        # Still nothing touched. No event says so: an invalid spec is not resynced, so
        # only watch events bring another reconcile; a few seconds of them.
        time.sleep(6)
        after = kube.trials(name)
        kube.check(
            {t["metadata"]["name"]: t["metadata"]["uid"] for t in after} == trial_uids,
            "the running trials changed, or a new one was created",
        )
        kube.check(
            all(t["status"]["phase"] == "Running" for t in after),
            f"phases {[t['status']['phase'] for t in after]}",
        )
        kube.check(
            {j.metadata.name: j.metadata.uid for j in kube.jobs(name)} == job_uids,
            "the running Jobs changed",
        )
        kube.check(len(kube.active_jobs(name)) == 2, "a running Job was stopped")

        # Fixed: the experiment goes on (the new trial runs the fixed template quickly).
        fixed = dict(xp["spec"]["trial"]["template"])
        fixed = {
            "metadata": {"annotations": {"trialforge.io/kwok-run-seconds": "2"}},
            "spec": dict(fixed["spec"], containers=[container]),
        }
        kube.patch_experiment(name, {"spec": {"trial": {"template": fixed}}})

        def valid_again() -> bool:
            c = condition((kube.experiment(name) or {}).get("status") or {}, "SpecValid")
            return bool(c and c["status"] == "True")

        kube.until(valid_again, 30, "condition SpecValid True again")
        status = wait_finished(kube, name, 60)
    kube.check(status["phase"] == "Succeeded", f"status {status}")
    kube.check(status["trials"]["succeeded"] == 3, f"counts {status['trials']}")
    kube.check(status["observedGeneration"] == 3, f"observedGeneration {status}")


# -- 9. deletion --------------------------------------------------------------------------


def test_deleting_the_experiment_removes_everything_it_made(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    name = "doomed"
    kube.create(experiment(name, max_trials=3, parallelism=2, workers=2, run_seconds="60"))
    sel = f"{LABEL_EXPERIMENT}={name}"

    def counts() -> dict[str, int]:
        return {
            "trials": len(kube.trials(name)),
            "jobs": len(kube.jobs(name)),
            "pods": len(kube.pods(name)),
            "services": len(kube.core.list_namespaced_service(namespace, label_selector=sel).items),
            "secrets": len(kube.core.list_namespaced_secret(namespace, label_selector=sel).items),
        }

    kube.until(
        lambda: counts() == {"trials": 2, "jobs": 2, "pods": 4, "services": 2, "secrets": 1},
        45,
        "two multi-node trials with their Jobs, pods, Services, and the token Secret",
    )
    cluster.kubectl("-n", namespace, "delete", "experiment", name, "--wait=false")
    kube.until(lambda: all(v == 0 for v in counts().values()), 60, "everything to go")
    time.sleep(3)  # and the operator recreates nothing
    kube.check(all(v == 0 for v in counts().values()), f"something came back: {counts()}")
    kube.check(operator.alive, "the operator died")


# -- 10. pruning and the ingest API ---------------------------------------------------------


def test_pruning_through_ingest_stops_the_job_and_ingest_checks_its_input(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    name = "prune"
    kube.create(
        experiment(
            name,
            max_trials=4,
            parallelism=1,
            run_seconds="5",
            early_stopping={
                "algorithm": "median",
                "settings": {"nStartupTrials": 2, "nWarmupSteps": 0},
            },
        )
    )

    def curve(trial: dict[str, Any]) -> list[tuple[int, dict[str, float]]] | None:
        index = index_of(trial)
        if index == 0:
            return None  # the test itself reports for trial 0, checking the API
        if index == 1:
            return [(1, {"loss": 0.5}), (2, {"loss": 0.4}), (3, {"loss": 0.3})]
        if index == 2:
            return [(1, {"loss": 100.0})]  # hopeless: the median pruner stops it
        return [(1, {"loss": math.nan})]  # diverged

    first = f"{name}-0"
    port = operator.port
    with Reporter(cluster, namespace, port, curve) as reporter:
        kube.until(
            lambda: any(p.status.phase == "Running" for p in kube.pods(name)), 30, f"{first} runs"
        )
        points = [(1, {"loss": 0.4}), (2, {"loss": 0.3}), (3, {"loss": 0.2})]
        good = batch(namespace, first, points)

        code, body = post(port, dict(good, token="0" * 64))
        kube.check(code == 403, f"a forged token was accepted: {code} {body}")
        code, body = post(port, dict(good, token=token(operator.key, namespace, f"{name}-1")))
        kube.check(code == 403, f"another trial's token was accepted: {code} {body}")
        code, body = post(port, batch(namespace, "no-such-trial", points))
        kube.check(code == 404, f"unknown trial: {code} {body}")
        code, body = post(port, dict(good, observations=[{"seq": 1}]))
        kube.check(code == 400, f"malformed observation: {code} {body}")

        code, body = post(port, dict(good, wait="soon"))
        kube.check(code == 400, f"a bad wait was accepted: {code} {body}")
        code, body = post(port, good)
        # Received at once; stored by the flusher a moment later.
        kube.check(code == 200 and body["received"] == 3, f"first post: {code} {body}")
        kube.check(body["stored"] in (0, 3) and body["accepted"] == 3, f"first post: {body}")
        code, body = post(port, dict(good, observations=[], wait=5))
        kube.check(code == 200 and body["stored"] == 3, f"waiting for the store: {code} {body}")
        code, body = post(port, good)
        kube.check(
            code == 200 and body["stored"] == 3 and body.get("accepted") == 0,
            f"a re-sent batch was not dropped: {code} {body}",
        )
        code, body = post(port, batch(namespace, first, [(5, {"loss": 0.1})], first_seq=5))
        kube.check(
            code == 409 and body.get("stored") == 3 and body.get("received") == 3,
            f"a gap was accepted: {code} {body}",
        )
        ts = kube.trial(first)["status"]
        kube.check(ts["lastSequence"] == 3, f"lastSequence {ts}")
        kube.check([p["step"] for p in ts["history"]["loss"]] == [1, 2, 3], f"history {ts}")
        kube.check(ts["metrics"]["loss"]["latest"] == 0.2, f"metrics {ts}")

        status = wait_finished(kube, name, 90)
    trials = {t["metadata"]["name"]: t for t in kube.trials(name)}
    kube.check(sorted(trials) == [f"{name}-{i}" for i in range(4)], f"trials {sorted(trials)}")
    s0, s1 = trials[first]["status"], trials[f"{name}-1"]["status"]
    kube.check(s0["phase"] == "Succeeded" and s0["objective"] == 0.2, f"{first}: {s0}")
    kube.check(s1["phase"] == "Succeeded" and s1["objective"] == 0.3, f"{name}-1: {s1}")

    pruned = trials[f"{name}-2"]["status"]
    kube.check(pruned["phase"] == "Pruned", f"{name}-2: {pruned}")
    kube.check(pruned["reason"] == "EarlyStopped", f"{name}-2 reason: {pruned}")
    kube.check("median" in pruned.get("message", ""), f"{name}-2 message: {pruned}")
    try:
        job = kube.batch.read_namespaced_job(f"{name}-2", namespace)
        kube.check(job.metadata.deletion_timestamp, f"the pruned trial's Job is not deleted: {job}")
    except ApiException as e:
        kube.check(e.status == 404, f"reading the pruned Job: {e}")
    # Stopped, not left to finish: its pod was scripted to run 5 s.
    kube.check(
        any(code == 200 for code, _ in reporter.answers.get(f"{name}-2", [])),
        f"the pruned trial's report was not stored: {reporter.answers}",
    )
    began, ended = (
        datetime.fromisoformat(pruned[k].replace("Z", "+00:00"))
        for k in ("startTime", "completionTime")
    )
    kube.check((ended - began).total_seconds() < 5, f"{name}-2 ran to its end: {pruned}")

    diverged = trials[f"{name}-3"]["status"]
    kube.check(diverged["phase"] == "Failed", f"{name}-3: {diverged}")
    kube.check(diverged["reason"] == "ObjectiveNotFinite", f"{name}-3 reason: {diverged}")
    kube.check(diverged.get("retryable") is False, f"{name}-3 retryable: {diverged}")

    kube.check(status["phase"] == "Succeeded", f"status {status}")
    counts = status["trials"]
    kube.check(
        counts["succeeded"] == 2 and counts["pruned"] == 1 and counts["failed"] == 1,
        f"counts {counts}",
    )
    kube.check(status["best"]["trial"] == first and status["bestValue"] == 0.2, f"{status}")
    reasons = {e.reason for e in kube.events()}
    kube.check("TrialPruned" in reasons, f"no TrialPruned event: {sorted(reasons)}")
    # A trial that has ended takes no more observations.
    code, body = post(port, batch(namespace, first, [(4, {"loss": 0.1})], first_seq=4))
    kube.check(code == 409 and body.get("stored") == 3, f"ended trial took data: {code} {body}")


@pytest.mark.parametrize(
    "limit",
    [
        pytest.param("interval", marks=pytest.mark.operator_args("--ingest-write-interval", "4")),
        pytest.param(
            "budget",
            marks=pytest.mark.operator_args(
                "--ingest-write-interval", "0", "--ingest-writes-per-second", "0.25"
            ),
        ),
    ],
)
def test_ingest_paces_a_trials_writes_and_writes_at_once_when_its_trainer_ends(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster, limit: str
) -> None:
    """A trial reporting ten times a second is written to its status once per
    --ingest-write-interval (or, with no interval, as often as a budget of one
    write per 4 s allows); the collector's last request (with ``wait``: the trainer
    has ended) is stored at once, outside the interval and the budget."""
    name = "paced"
    kube.create(experiment(name, max_trials=1, parallelism=1, run_seconds="60"))
    trial = f"{name}-0"
    kube.until(lambda: any(p.status.phase == "Running" for p in kube.pods(name)), 30, "it runs")
    writes: list[tuple[float, int]] = []  # (when seen, lastSequence) at each change

    def sample() -> None:
        seq = int((kube.trial(trial).get("status") or {}).get("lastSequence") or 0)
        if seq and (not writes or writes[-1][1] != seq):
            writes.append((time.monotonic(), seq))

    seq = 0
    with sampling(sample, every=0.05) as errors:
        began = time.monotonic()
        while time.monotonic() - began < 5:
            seq += 1
            code, body = post(
                operator.port, batch(namespace, trial, [(seq, {"loss": 1 / seq})], first_seq=seq)
            )
            kube.check(code == 200 and body["received"] == seq, f"post {seq}: {code} {body}")
            time.sleep(0.1)
        seq += 1
        asked = time.monotonic()
        last = batch(namespace, trial, [(seq, {"loss": 0.0})], first_seq=seq, wait=8)
        code, body = post(operator.port, last)
        answered = time.monotonic() - asked
        time.sleep(0.3)  # the sampler sees the last write
    kube.check(not errors, f"sampling failed: {errors}")
    kube.check(code == 200 and body["stored"] == seq, f"the last request: {code} {body}")
    # Written at about 0 s and 4 s; the next would be due at 8 s, the last request came
    # at 5 s and was stored at once.
    kube.check(answered < 1.5, f"the last request waited {answered:.1f}s for the {limit}")
    kube.check(writes and writes[-1][1] == seq, f"the status ends at {writes}, not {seq}")
    paced = writes[:-1]  # the last write was the trainer's end, not paced
    gaps = [round(b[0] - a[0], 2) for a, b in itertools.pairwise(paced)]
    kube.check(len(writes) <= 4, f"{len(writes)} writes of {seq} observations: {writes}")
    kube.check(all(g > 3.0 for g in gaps), f"writes closer than the interval: {gaps}")
    ts = kube.trial(trial)["status"]
    steps = [p["step"] for p in ts["history"]["loss"]]
    kube.check(
        steps[-1] == seq and ts["metrics"]["loss"]["latest"] == 0,
        f"the last observation is not in the status: {ts}",
    )
